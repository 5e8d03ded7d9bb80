"""Reading label images in every format nnssl_evaluate takes, and pairing reference and prediction folders."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import zarr

from nnssl.errors import NnsslError
from nnssl.evaluation.files import pair_cases, read_segmentation, segmentation_files
from tests import lsm_files

LABELS = (np.arange(8 * 12 * 16).reshape(8, 12, 16) % 3).astype(np.uint8)  # (Z, Y, X), values 0-2


def write(path, data: np.ndarray = LABELS) -> str:
    """``data`` (Z, Y, X) at ``path`` in the format its ending names."""
    path = str(path)
    if path.endswith((".nii.gz", ".mha", ".nrrd")):
        sitk.WriteImage(sitk.GetImageFromArray(data), path)
    elif path.endswith(".tif"):
        tifffile.imwrite(path, data)
    elif path.endswith(".ome.zarr"):
        lsm_files.write_ome_zarr(path, data.shape, data.dtype, lambda z0, z1: data[z0:z1], (2.0, 1.0, 1.0),
                                 levels=2, chunks=(4, 8, 8))
    elif path.endswith(".zarr"):
        zarr.create_array(path, data=data, chunks=(4, 8, 8))
    else:  # a folder of 2D planes
        lsm_files.write_plane_folder(path, data.shape, lambda z0, z1: data[z0:z1], (1.0, 1.0, 1.0))
    return path


@pytest.mark.parametrize("name", ["a.nii.gz", "a.mha", "a.nrrd", "a.tif", "a.ome.zarr", "a.zarr", "a"])
def test_every_format_reads_as_z_y_x(tmp_path, name):
    data = read_segmentation(write(tmp_path / name))
    assert data.shape == LABELS.shape and np.array_equal(data, LABELS)


@pytest.mark.filterwarnings("ignore:Dimension . is too small")
def test_ome_zarr_written_by_the_ome_zarr_library(tmp_path):
    """NGFF 0.5 (Zarr 3, levels s0, s1, ...) as ome-zarr writes it, and labels stored beside an image."""
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(tmp_path / "a.ome.zarr"), mode="w")
    write_image(LABELS, root, axes="zyx", scale_factors=(2,))
    assert np.array_equal(read_segmentation(str(tmp_path / "a.ome.zarr")), LABELS)
    image = zarr.open_group(str(tmp_path / "b.ome.zarr"), mode="w")
    write_image(np.zeros_like(LABELS), image, axes="zyx", scale_factors=(2,))
    write_labels(LABELS, image, name="segmentation", axes="zyx", scale_factors=(2,))
    # the image's own multiscales come first: a label image group is read only where no image is stored
    assert np.array_equal(read_segmentation(str(tmp_path / "b.ome.zarr")), np.zeros_like(LABELS))
    labels_only = zarr.open_group(str(tmp_path / "c.ome.zarr"), mode="w")
    write_labels(LABELS, labels_only, name="segmentation", axes="zyx", scale_factors=(2,))
    assert np.array_equal(read_segmentation(str(tmp_path / "c.ome.zarr")), LABELS)


def test_bad_label_images_are_one_line_errors(tmp_path):
    with pytest.raises(NnsslError, match=r"flat\.tif: label image of shape \[12, 16\] is not 3D"):
        read_segmentation(write(tmp_path / "flat.tif", LABELS[0]))
    with pytest.raises(NnsslError, match="soft.nii.gz: holds non-integer values"):
        read_segmentation(write(tmp_path / "soft.nii.gz", LABELS.astype(np.float32) / 2))
    assert read_segmentation(write(tmp_path / "whole.nii.gz", LABELS.astype(np.float32))).dtype == np.int32
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    with pytest.raises(NnsslError, match="broken.nii.gz: cannot read this label image") as e:
        read_segmentation(str(tmp_path / "broken.nii.gz"))
    assert "\n" not in str(e.value)
    zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    with pytest.raises(NnsslError, match="bare.zarr: Zarr group with neither OME 'multiscales' nor NGFF 'labels'"):
        read_segmentation(str(tmp_path / "bare.zarr"))


def test_pairing_by_case_name_across_endings(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    write(ref / "case_1.nii.gz"), write(ref / "case_2.tif")
    write(pred / "case_1.ome.zarr"), write(pred / "case_2.nii.gz"), write(pred / "extra.nii.gz")
    (pred / "plans.json").write_text("{}")
    pairs = pair_cases(str(ref), str(pred))
    assert [(p.case, p.reference.split("/")[-1], p.prediction.split("/")[-1]) for p in pairs] == [
        ("case_1", "case_1.nii.gz", "case_1.ome.zarr"), ("case_2", "case_2.tif", "case_2.nii.gz")]
    write(pred / "case_1.nii.gz")
    with pytest.raises(NnsslError, match="case_1.nii.gz and .*case_1.ome.zarr: two label images of case case_1"):
        segmentation_files(str(pred))


def test_a_missing_prediction_names_the_reference(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        write(ref / name)
    write(pred / "a.nii.gz")
    with pytest.raises(NnsslError, match=r"ref/b.nii.gz: no prediction b.<ending> in .*pred \(and 1 more cases\)"):
        pair_cases(str(ref), str(pred))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NnsslError, match="empty: no label images"):
        pair_cases(str(tmp_path / "empty"), str(pred))
    with pytest.raises(NnsslError, match="nowhere: no such folder; check -pred"):
        pair_cases(str(ref), str(tmp_path / "nowhere"))
