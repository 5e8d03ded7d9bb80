"""Label images on disk: reading one whole, and pairing a reference folder with a prediction folder.

Formats: NIfTI, MHA, NRRD (SimpleITK), TIFF stacks (tifffile), folders of 2D TIFF planes, Zarr arrays and
OME-Zarr images (level 0 of the first multiscale, which is what ``nnssl_predict`` writes as
``<case>.ome.zarr``). Naming is nnU-Net's: ``CASE.<ending>`` in both folders, where the reference and the
prediction of a case may have different endings (``CASE.nii.gz`` against ``CASE.ome.zarr``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from nnssl.errors import NnsslError
from nnssl.volumes.discovery import PLANES, TIFF_ENDINGS, ZARR_ENDINGS, file_ending, plane_files

logger = logging.getLogger(__name__)

FORMATS = "NIfTI, MHA, NRRD, TIFF, TIFF-plane folders, Zarr, OME-Zarr"


@dataclass(frozen=True)
class CasePair:
    """One case's reference and prediction files."""

    case: str
    reference: str
    prediction: str


def segmentation_files(folder: str) -> dict[str, str]:
    """{case: path} of the label images directly inside ``folder`` (other files are ignored)."""
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        ending = None if name.startswith(".") else file_ending(path)
        if ending is None:
            continue
        case = name[: len(name) - len(ending)]
        if case in found:
            raise NnsslError(f"{found[case]} and {path}: two label images of case {case}; keep one of them")
        found[case] = path
    return found


def pair_cases(reference_folder: str, prediction_folder: str) -> list[CasePair]:
    """Every reference with its prediction (same case name); a reference without one is an error."""
    for flag, folder in (("-ref", reference_folder), ("-pred", prediction_folder)):
        if not os.path.isdir(folder):
            raise NnsslError(f"{folder}: no such folder; check {flag}")
    references = segmentation_files(reference_folder)
    if not references:
        raise NnsslError(f"{reference_folder}: no label images ({FORMATS}) in this folder; check -ref")
    predictions = segmentation_files(prediction_folder)
    missing = [case for case in references if case not in predictions]
    if missing:
        more = f" (and {len(missing) - 1} more cases)" if len(missing) > 1 else ""
        raise NnsslError(f"{references[missing[0]]}: no prediction {missing[0]}.<ending> in {prediction_folder}"
                         f"{more}; predict the case or remove its reference")
    extra = sorted(set(predictions) - set(references))
    if extra:
        logger.info("%d prediction(s) without a reference ignored (%s)", len(extra), ", ".join(extra[:5]))
    return [CasePair(case, references[case], predictions[case]) for case in references]


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _label_image(path: str) -> str:
    """``path``, or for an OME-Zarr image whose labels lie beside it (NGFF ``labels/<name>``, no multiscales of
    its own), its first label image."""
    import zarr

    node = zarr.open(path, mode="r")
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Array) or "multiscales" in attrs or "multiscales" in attrs.get("ome", {}):
        return path
    labels = dict(node["labels"].attrs) if "labels" in node else {}
    names = labels.get("labels") or labels.get("ome", {}).get("labels")
    if not names:
        raise NnsslError(f"{path}: Zarr group with neither OME 'multiscales' nor NGFF 'labels' metadata; store the "
                         "label image as OME-Zarr or as a plain Zarr array")
    return os.path.join(path, "labels", names[0])


def _read_any(path: str, ending: str) -> np.ndarray:
    if ending in ZARR_ENDINGS:
        from nnssl.volumes.ome_zarr import open_image

        image = open_image(_label_image(path))  # the finest level, dataset 0 of the first multiscale
        return np.asarray(image.array[...])
    if ending in TIFF_ENDINGS or ending == PLANES:
        import tifffile

        if ending == PLANES:
            return np.stack([tifffile.imread(f) for f in plane_files(path)])
        return tifffile.imread(path)
    import SimpleITK as sitk

    image = sitk.ReadImage(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NnsslError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a label image holds one class number per voxel")
    return sitk.GetArrayFromImage(image)  # (z, y, x), as nnU-Net's SimpleITKIO reads it


def read_segmentation(path: str) -> np.ndarray:
    """The whole label image at ``path`` as an integer array (Z, Y, X); leading axes of size 1 are dropped."""
    ending = file_ending(path)
    if ending is None:
        raise NnsslError(f"{path}: not a label image nnssl reads ({FORMATS})")
    try:
        data = _read_any(path, ending)
    except NnsslError:
        raise
    except Exception as e:
        raise NnsslError(f"{path}: cannot read this label image ({_first_line(e)}); replace or re-export it") from e
    while data.ndim > 3 and data.shape[0] == 1:  # channel or time axis of size 1
        data = data[0]
    if data.ndim != 3:
        raise NnsslError(f"{path}: label image of shape {list(data.shape)} is not 3D (z, y, x); "
                         "nnssl_evaluate scores 3D label images")
    if data.dtype == bool:
        return data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.array_equal(data, np.round(data)):
            raise NnsslError(f"{path}: holds non-integer values; a label image holds class numbers "
                             "(threshold probabilities first)")
        data = data.astype(np.int32)
    return data
