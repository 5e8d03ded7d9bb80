"""Reads and validates one unlabeled case: Zarr, OME-Zarr and plane folders through ``nnssl.volumes.lazy``,
the formats nnU-Net reads (TIFF stacks, NIfTI, MHA, NRRD) through the reader the caller passes
(``nnssl.nnunet_adapter.readers.nnunet_reader``: this floor imports no nnU-Net).

Header checks (cheap, no voxel data): 3D, readable. Voxel checks: finite, not constant. A constant
image is skipped with a warning (it teaches nothing); everything else raises ``NnsslError``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from nnssl.errors import NnsslError
from nnssl.volumes.discovery import PLANES, TIFF_ENDINGS, ZARR_ENDINGS, UnlabeledCase

logger = logging.getLogger(__name__)

# tiff -> an object with nnU-Net's ``read_images(files) -> (data (C, Z, Y, X), properties)``
ReaderChoice = Callable[[bool], Any]


class ConstantImageError(NnsslError):
    """The case holds one value only; callers skip it."""


def _header_shape(path: str, ending: str) -> tuple[int, ...]:
    try:
        if ending in TIFF_ENDINGS:
            from nnssl.volumes.lazy import tiff_shape

            return tiff_shape(path)
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        size = reader.GetSize()
        return tuple(reversed(size)) if reader.GetNumberOfComponents() == 1 else (*reversed(size), -1)
    except NnsslError:
        raise
    except Exception as e:
        raise NnsslError(f"{path}: cannot read this file ({_first_line(e)}); replace or remove it") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def check_case_header(case: UnlabeledCase) -> None:
    """Raises for a 2D, 4D/vector or unreadable image, looking at headers only."""
    if case.file_ending in (*ZARR_ENDINGS, PLANES):
        from nnssl.volumes.lazy import open_case_volumes

        open_case_volumes(case)
        return
    for path in case.image_files:
        shape = _header_shape(path, case.file_ending)
        if -1 in shape:
            raise NnsslError(f"{path}: vector/RGB image; store one scalar 3D image per channel (CASE_000c)")
        if len(shape) != 3 or min(shape) < 2:
            kind = "2D" if len([s for s in shape if s > 1]) <= 2 else f"{len(shape)}D"
            raise NnsslError(
                f"{path}: {kind} image of shape {list(shape)}; nnssl pretrains on 3D volumes (z, y, x)"
            )


def case_shape(case: UnlabeledCase) -> tuple[int, int, int, int]:
    """(channels, z, y, x) of a case that passed ``check_case_header``, from headers only."""
    if case.file_ending in (*ZARR_ENDINGS, PLANES):
        from nnssl.volumes.lazy import open_case_volumes

        volumes = open_case_volumes(case)
        return (len(volumes), *(int(s) for s in volumes[0].shape))
    z, y, x = _header_shape(case.image_files[0], case.file_ending)
    return len(case.image_files), int(z), int(y), int(x)


def read_case(case: UnlabeledCase, reader_choice: ReaderChoice) -> tuple[np.ndarray, dict]:
    """Returns (data (C, Z, Y, X) float32, nnU-Net properties with 'spacing') of a valid case;
    ``reader_choice(tiff)`` gives the reader of the formats nnU-Net reads."""
    check_case_header(case)
    if case.file_ending in (*ZARR_ENDINGS, PLANES):  # formats nnU-Net has no reader for
        from nnssl.volumes.lazy import open_case_volumes, read_whole

        volumes = open_case_volumes(case)
        data, properties = read_whole(volumes), {"spacing": list(volumes[0].spacing)}
        _check_voxels(case, data)
        return data, properties
    reader = reader_choice(case.file_ending in TIFF_ENDINGS)
    try:
        # Tiff3DIO prints its own spacing warning for plain names; nnssl resolved the spacing already
        with contextlib.redirect_stdout(io.StringIO()):
            data, properties = reader.read_images(case.image_files)
    except Exception as e:
        raise NnsslError(
            f"{case.image_files[0]}: cannot read this case ({_first_line(e)}); replace or remove it"
        ) from e
    if case.tiff_spacing is not None:
        properties["spacing"] = list(case.tiff_spacing)
    _check_voxels(case, data)
    return data, properties


def _check_voxels(case: UnlabeledCase, data: np.ndarray) -> None:
    for channel, values in enumerate(data):
        path = case.image_files[min(channel, len(case.image_files) - 1)]
        if not np.isfinite(values).all():
            raise NnsslError(f"{path}: contains NaN or Inf voxels; fix or remove this image")
        if values.min() == values.max():
            raise ConstantImageError(f"{path}: constant image (every voxel {values.flat[0]:g}); skipped")


def check_case_sample(case: UnlabeledCase) -> None:
    """Voxel checks of a volume too large to read whole: on a sample of evenly spaced planes."""
    from nnssl.volumes.lazy import open_case_volumes, sample_voxels

    samples = sample_voxels(open_case_volumes(case))
    _check_voxels(case, samples)


class CaseLoader:
    """Picklable ``case_id -> (data (C, Z, Y, X) float32, properties)`` for nnU-Net-side workers."""

    def __init__(self, cases: dict[str, UnlabeledCase], reader_choice: ReaderChoice) -> None:
        self.cases, self.reader_choice = cases, reader_choice  # a module-level function: picklable

    def __call__(self, case_id: str) -> tuple[np.ndarray, dict]:
        return read_case(self.cases[case_id], self.reader_choice)
