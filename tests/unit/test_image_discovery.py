import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.readers import nnunet_reader
from nnssl.pretraining.engine.inputs import check_cases
from nnssl.volumes.discovery import discover_cases
from nnssl.volumes.reading import ConstantImageError, read_case


def nifti(path, array, spacing=(0.5, 0.25, 2.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def volume(seed=0):
    return np.random.default_rng(seed).poisson(50, (8, 16, 16)).astype(np.uint16)


def test_nnunet_and_plain_naming_recursive(tmp_path):
    nifti(tmp_path / "a_0000.nii.gz", volume())
    nifti(tmp_path / "sub" / "deeper" / "b.nii.gz", volume(1))
    tifffile.imwrite(tmp_path / "c.tif", volume(2))
    (tmp_path / "c.json").write_text(json.dumps({"spacing": [2.0, 0.3, 0.3]}))
    cases = {c.identifier: c for c in discover_cases([str(tmp_path)])}
    assert set(cases) == {"a", "sub__deeper__b", "c"}
    assert cases["c"].tiff_spacing == [2.0, 0.3, 0.3]
    data, props = read_case(cases["c"], nnunet_reader)
    assert data.shape == (1, 8, 16, 16) and props["spacing"] == [2.0, 0.3, 0.3]
    data, props = read_case(cases["a"], nnunet_reader)
    assert list(props["spacing"]) == [2.0, 0.25, 0.5]  # nnU-Net's (z, y, x) order


def test_tiff_spacing_flag_and_warning(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "x_0000.tif", volume())
    with caplog.at_level(logging.WARNING):
        case = discover_cases([str(tmp_path)])[0]
    assert case.tiff_spacing == [1.0, 1.0, 1.0] and "x_0000.tif" in caplog.text
    assert discover_cases([str(tmp_path)], spacing=[3, 1, 1])[0].tiff_spacing == [3.0, 1.0, 1.0]
    (tmp_path / "x.json").write_text(json.dumps({"spacing": [4, 1, 1]}))  # sidecar wins
    assert discover_cases([str(tmp_path)], spacing=[3, 1, 1])[0].tiff_spacing == [4.0, 1.0, 1.0]


def test_multichannel_case_and_gaps(tmp_path):
    nifti(tmp_path / "a_0000.nii.gz", volume(0))
    nifti(tmp_path / "a_0001.nii.gz", volume(1))
    case = discover_cases([str(tmp_path)], expected_channels=2)[0]
    assert read_case(case, nnunet_reader)[0].shape == (2, 8, 16, 16)
    with pytest.raises(NnsslError, match="the dataset has 1"):
        discover_cases([str(tmp_path)], expected_channels=1)
    nifti(tmp_path / "b_0000.nii.gz", volume(2))
    nifti(tmp_path / "b_0002.nii.gz", volume(3))
    with pytest.raises(NnsslError, match="without gaps"):
        discover_cases([str(tmp_path)])


def test_duplicate_case_channel(tmp_path):
    nifti(tmp_path / "a.nii.gz", volume(0))
    nifti(tmp_path / "a_0000.nii.gz", volume(1))
    with pytest.raises(NnsslError, match="same case and channel"):
        discover_cases([str(tmp_path)])


def test_constant_image_is_skipped_with_a_warning(tmp_path, caplog):
    nifti(tmp_path / "good_0000.nii.gz", volume())
    nifti(tmp_path / "flat_0000.nii.gz", np.zeros((8, 16, 16), np.uint16))
    cases = discover_cases([str(tmp_path)])
    with pytest.raises(ConstantImageError):
        read_case(next(c for c in cases if c.identifier == "flat"), nnunet_reader)
    with caplog.at_level(logging.WARNING):
        usable = check_cases(cases)
    assert [c.identifier for c in usable] == ["good"]
    assert "flat_0000.nii.gz" in caplog.text
