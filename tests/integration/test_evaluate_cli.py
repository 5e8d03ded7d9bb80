"""The real ``nnssl_evaluate`` on tiny label images: NIfTI references against OME-Zarr and TIFF predictions,
the summary.json it writes, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from tests import lsm_files

pytestmark = pytest.mark.cli

BIN = Path(sys.executable).parent
SHAPE = (16, 24, 32)


def reference() -> np.ndarray:
    """Label 1: two separate 4^3 cubes (nuclei); label 2: a tube of radius 2 along x (a vessel)."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[2:6, 2:6, 10:14] = 1
    z, y, _ = np.indices(SHAPE)
    labels[((z - 11) ** 2 + (y - 16) ** 2 <= 4) & (labels == 0)] = 2
    return labels


def write_nifti(path: Path, data: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path))


def write_ome_zarr(path: Path, data: np.ndarray) -> None:
    lsm_files.write_ome_zarr(str(path), data.shape, data.dtype, lambda z0, z1: data[z0:z1], (1.0, 1.0, 1.0),
                             levels=2, chunks=(8, 16, 16))


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "nnssl_evaluate"), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """ref/: two NIfTI cases; pred/: case_a exact (OME-Zarr), case_b with the cubes merged (TIFF)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    labels = reference()
    write_nifti(ref / "case_a.nii.gz", labels), write_nifti(ref / "case_b.nii.gz", labels)
    write_ome_zarr(pred / "case_a.ome.zarr", labels)
    merged = labels.copy()
    merged[2:6, 2:6, 6:10] = 1  # a bridge joins the two cubes: one 4 x 4 x 12 box
    tifffile.imwrite(pred / "case_b.tif", merged)
    return ref, pred


def test_summary_of_two_cases(folders):
    ref, pred = folders
    result = evaluate("-ref", str(ref), "-pred", str(pred), "-np", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((pred / "summary.json").read_text())
    assert set(summary) == {"metric_per_case", "mean", "foreground_mean"}
    cases = {Path(c["prediction_file"]).name: c for c in summary["metric_per_case"]}
    assert set(cases) == {"case_a.ome.zarr", "case_b.tif"}
    assert Path(cases["case_b.tif"]["reference_file"]).name == "case_b.nii.gz"
    exact, merged = cases["case_a.ome.zarr"]["metrics"], cases["case_b.tif"]["metrics"]
    assert set(exact) == {"1", "2"}  # every nonzero label of the references
    assert all(exact[label][key] == 1.0 for label in "12" for key in ("Dice", "clDice", "F1", "PQ"))
    assert exact["2"]["Betti0_error"] == exact["2"]["Betti1_error"] == 0
    # case_b, label 1: the merged box (192 voxels) against the cubes (2 x 64): Dice 2 * 128 / 320 = 0.8;
    # IoU with each cube 64 / 192 = 1/3 >= 0.3: one match, one cube missed: F1 2/3, PQ 2/3 * 1/3
    assert merged["1"]["Dice"] == pytest.approx(0.8) and merged["1"]["Betti0_error"] == 1
    assert merged["1"]["F1"] == pytest.approx(2 / 3) and merged["1"]["PQ"] == pytest.approx(2 / 9)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(0.9)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(0.95)
    table = result.stdout.splitlines()
    assert table[0].split() == ["label", "Dice", "clDice", "Betti0_error", "Betti1_error", "F1", "PQ"]
    assert table[1].split()[:2] == ["1", "0.9000"] and table[3].split()[:2] == ["mean", "0.9500"]
    assert "summary of 2 case(s)" in table[-1]
    assert "panoptica" not in result.stdout + result.stderr  # its banner and log stay quiet


def test_labels_metrics_and_output_options(folders, tmp_path):
    ref, pred = folders
    out = tmp_path / "scores" / "dice.json"
    result = evaluate("-ref", str(ref), "-pred", str(pred), "-l", "2", "-o", str(out), "--metrics", "overlap",
                      "-np", "1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert list(summary["mean"]) == ["2"] and "clDice" not in summary["mean"]["2"]
    assert summary["mean"]["2"]["Dice"] == 1.0 and not (pred / "summary.json").exists()


def test_bad_inputs_are_one_line_errors(folders):
    ref, pred = folders
    write_nifti(ref / "case_c.nii.gz", reference())
    result = evaluate("-ref", str(ref), "-pred", str(pred))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"nnssl_evaluate: error: {ref / 'case_c.nii.gz'}: no prediction case_c.<ending> in {pred}; "
        "predict the case or remove its reference"]
    (ref / "case_c.nii.gz").unlink()
    (pred / "case_b.tif").unlink()
    tifffile.imwrite(pred / "case_b.tif", reference()[:, :, :20])
    result = evaluate("-ref", str(ref), "-pred", str(pred), "-np", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"nnssl_evaluate: error: {pred / 'case_b.tif'}: shape [16, 24, 20] differs from its reference "
        f"{ref / 'case_b.nii.gz'} [16, 24, 32]; predict on the reference's grid")
    assert not (pred / "summary.json").exists()
