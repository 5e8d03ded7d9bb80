"""Synthetic light-sheet-like data: determinism, labels, nnU-Net-readable files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.synthetic import make_volume, write_labeled_dataset, write_unlabeled_folder

SHAPE = (16, 32, 32)


@pytest.mark.parametrize("kind", ["blobs", "tubes", "mixed"])
def test_make_volume_deterministic_and_typed(kind: str) -> None:
    image, label = make_volume(SHAPE, seed=3, kind=kind)
    image2, label2 = make_volume(SHAPE, seed=3, kind=kind)
    assert image.shape == SHAPE and label.shape == SHAPE
    assert image.dtype == np.uint16 and label.dtype == np.uint8
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(label, label2)
    assert set(np.unique(label)) == {0, 1}
    other, _ = make_volume(SHAPE, seed=4, kind=kind)
    assert not np.array_equal(image, other)


def test_label_marks_bright_structures() -> None:
    image, label = make_volume((32, 64, 64), seed=0, kind="mixed")
    inside = image[label == 1].mean()
    outside = image[label == 0].mean()
    assert inside > 2.5 * outside
    assert 0.02 < label.mean() < 0.5


def test_make_volume_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        make_volume(SHAPE, kind="cells")


def test_labeled_dataset_readable_by_nnunet(tmp_path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    folder = write_labeled_dataset(str(tmp_path), 502, "Syn", num_cases=2, shape=SHAPE, num_test_cases=1)
    assert os.path.basename(folder) == "Dataset502_Syn"
    with open(os.path.join(folder, "dataset.json")) as f:
        dj = json.load(f)
    assert dj["channel_names"] == {"0": "LSM"}
    assert dj["labels"] == {"background": 0, "structure": 1}
    assert dj["numTraining"] == 2 and dj["file_ending"] == ".nii.gz"
    io = SimpleITKIO()
    img, props = io.read_images([os.path.join(folder, "imagesTr", "Syn_000_0000.nii.gz")])
    seg, seg_props = io.read_seg(os.path.join(folder, "labelsTr", "Syn_000.nii.gz"))
    assert img.shape == (1, *SHAPE) and seg.shape == (1, *SHAPE)
    np.testing.assert_allclose(props["spacing"], [2.0, 1.0, 1.0])
    np.testing.assert_allclose(seg_props["spacing"], [2.0, 1.0, 1.0])
    expected_img, expected_seg = make_volume(SHAPE, seed=0, kind="mixed")
    np.testing.assert_array_equal(img[0], expected_img)
    np.testing.assert_array_equal(seg[0], expected_seg)
    assert os.path.isfile(os.path.join(folder, "imagesTs", "Syn_test_000_0000.nii.gz"))
    assert os.path.isfile(os.path.join(folder, "labelsTs", "Syn_test_000.nii.gz"))


def test_labeled_dataset_two_channels(tmp_path) -> None:
    folder = write_labeled_dataset(str(tmp_path), 503, "Two", num_cases=1, shape=SHAPE, num_channels=2,
                                   num_test_cases=0)
    with open(os.path.join(folder, "dataset.json")) as f:
        assert len(json.load(f)["channel_names"]) == 2
    assert os.path.isfile(os.path.join(folder, "imagesTr", "Two_000_0001.nii.gz"))


def test_unlabeled_tif_plain_with_sidecar(tmp_path) -> None:
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    files = write_unlabeled_folder(
        str(tmp_path), num_cases=2, shape=SHAPE, file_ending=".tif", naming="plain"
    )
    assert [os.path.basename(f) for f in files] == ["lsm_000.tif", "lsm_001.tif"]
    with open(tmp_path / "lsm_000.json") as f:
        assert json.load(f) == {"spacing": [2.0, 1.0, 1.0]}
    img, _ = Tiff3DIO().read_images([files[0]])
    assert img.shape == (1, *SHAPE)


def test_unlabeled_tif_nnunet_naming_spacing(tmp_path) -> None:
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    files = write_unlabeled_folder(str(tmp_path), num_cases=1, shape=SHAPE, file_ending=".tif")
    assert os.path.basename(files[0]) == "lsm_000_0000.tif"
    _, props = Tiff3DIO().read_images(files)
    assert list(props["spacing"]) == [2.0, 1.0, 1.0]


def test_unlabeled_nifti_nnunet_naming(tmp_path) -> None:
    files = write_unlabeled_folder(str(tmp_path), num_cases=2, shape=SHAPE, seed=5)
    assert [os.path.basename(f) for f in files] == ["lsm_000_0000.nii.gz", "lsm_001_0000.nii.gz"]
