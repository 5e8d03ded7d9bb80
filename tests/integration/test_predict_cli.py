"""``nnssl_predict`` through the real CLIs: agreement with nnUNetv2_predict, killed and resumed runs, two
processes under torchrun, output format, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import zarr

from tests.conftest import BIN, PREDICT_ARGS, PREDICT_OPTIONS, NnunetEnv

pytestmark = pytest.mark.cli

BLOCKS = ["--block-size", "64", "64", "64"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a > 0, b > 0).sum() / max((a > 0).sum() + (b > 0).sum(), 1)


def labels(path: Path) -> np.ndarray:
    return zarr.open_array(str(path / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def tiff_inputs(nnunet: NnunetEnv, tmp_path_factory) -> Path:
    """The test images as TIFF stacks (spacing in sidecars), plus one large case stitched from them."""
    folder = tmp_path_factory.mktemp("tiff_in")
    images = sorted((nnunet.dataset_dir("raw") / "imagesTs").glob("*.nii.gz"))
    for image_file in images:
        image = sitk.ReadImage(str(image_file))
        case = image_file.name[: -len("_0000.nii.gz")]
        tifffile.imwrite(folder / f"{case}_0000.tif", sitk.GetArrayFromImage(image))
        (folder / f"{case}.json").write_text(json.dumps({"spacing": list(image.GetSpacing())[::-1]}))
    return folder


@pytest.fixture(scope="module")
def large_input(nnunet: NnunetEnv, tmp_path_factory) -> Path:
    """One 64 x 128 x 256 case (8 blocks of 64^3) tiled from a test image, half of it dark background."""
    folder = tmp_path_factory.mktemp("large_in")
    image_file = sorted((nnunet.dataset_dir("raw") / "imagesTs").glob("*.nii.gz"))[0]
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_file)))
    volume = np.tile(image, (2, 2, 4))
    volume[:, :, 128:] = np.random.default_rng(0).normal(10, 1, volume[:, :, 128:].shape).clip(0).astype(volume.dtype)
    tifffile.imwrite(folder / "organ_0000.tif", volume)
    (folder / "organ.json").write_text(json.dumps({"spacing": [2.0, 1.0, 1.0]}))
    return folder


@pytest.fixture(scope="module")
def large_reference(predict_model: NnunetEnv, large_input: Path) -> Path:
    out = predict_model.root / "predict_large_reference"
    predict_model.run("nnssl_predict", "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS)
    return out


def test_agrees_with_nnunet_predict(predict_model: NnunetEnv, tiff_inputs: Path):
    ours, theirs = predict_model.root / "predict_nnssl", predict_model.root / "predict_nnunet"
    predict_model.run("nnUNetv2_predict", "-i", str(predict_model.dataset_dir("raw") / "imagesTs"), "-o", str(theirs),
                      *PREDICT_ARGS[:-1])
    result = predict_model.run("nnssl_predict", "-i", str(tiff_inputs), "-o", str(ours), *PREDICT_ARGS)
    assert "2 case(s) predicted" in result.stdout
    for reference_file in sorted(theirs.glob("*.nii.gz")):
        case = reference_file.name[: -len(".nii.gz")]
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_file)))
        predicted = labels(ours / f"{case}.ome.zarr")
        assert 0.02 < (reference > 0).mean() < 0.98, "the model must predict both classes for this test to mean much"
        assert dice(predicted, reference) >= 0.99
    summary = json.loads((ours / "predict_summary.json").read_text())["cases"]
    assert {s["case"] for s in summary} == {"SyntheticLSM_test_000", "SyntheticLSM_test_001"}


def test_output_is_an_ngff_label_image_with_a_pyramid(large_reference: Path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = large_reference / "organ.ome.zarr"
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes[0].load(Label) is not None and nodes[0].load(Multiscales) is not None
    shapes = [tuple(level.shape) for level in nodes[0].data]
    assert shapes[0] == (64, 128, 256) and len(shapes) >= 2 and shapes[1] == (32, 64, 128)
    full = labels(path)
    np.testing.assert_array_equal(np.asarray(nodes[0].data[1]), full[::2, ::2, ::2])
    summary = json.loads((large_reference / "predict_summary.json").read_text())["cases"][0]
    # of the 4 blocks in the dark half, the 2 whose halo (one patch) reaches the tissue are predicted
    assert summary["blocks"] == 8 and summary["blocks_skipped"] == 2
    assert summary["tissue_voxels"] == 6 * 64**3
    assert not full[:, :, 192:].any()
    assert not list(large_reference.glob("*.partial"))


def test_killed_run_continues_to_the_same_result(predict_model: NnunetEnv, large_input: Path, large_reference: Path):
    out = predict_model.root / "predict_killed"
    command = [str(BIN / "nnssl_predict"), "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS]
    process = subprocess.Popen(command, env=predict_model.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "organ.ome.zarr.partial" / ".nnssl_journal" / "rank0.log"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGSTOP)  # alive and holding the output folder while a second run is tried
    try:
        second = predict_model.run("nnssl_predict", "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS,
                                   "--continue", check=False)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr[-3000:]
    assert f"with PID {process.pid} " in second.stderr and "is writing this output folder" in second.stderr
    done_before = journal.read_text().count("\n")
    assert not (out / "organ.ome.zarr").exists()  # never mistaken for a complete output
    refused = predict_model.run("nnssl_predict", "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS,
                                check=False)
    assert refused.returncode == 2 and "--continue" in refused.stderr and len(refused.stderr.splitlines()) == 1
    predict_model.run("nnssl_predict", "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS, "--continue")
    summary = json.loads((out / "predict_summary.json").read_text())["cases"][0]
    assert summary["resumed_blocks"] >= done_before >= 2
    resumed = labels(out / "organ.ome.zarr")
    reference = labels(large_reference / "organ.ome.zarr")
    np.testing.assert_array_equal(resumed, reference)


def test_two_processes_write_the_same_result(predict_model: NnunetEnv, large_input: Path, large_reference: Path):
    out = predict_model.root / "predict_torchrun"
    predict_model.run("torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", str(BIN / "nnssl_predict"),
                      "-i", str(large_input), "-o", str(out), *PREDICT_ARGS, *BLOCKS, "--save_probabilities",
                      OMP_NUM_THREADS="1")
    # Each of the two processes runs one CPU thread where the reference ran two, so the convolutions sum in another
    # order: a voxel whose two classes are tied within rounding may flip. A block lost or cut at a rank's border
    # would differ in thousands of voxels with a clear margin.
    differ = labels(out / "organ.ome.zarr") != labels(large_reference / "organ.ome.zarr")
    probabilities = np.asarray(zarr.open_array(str(out / "organ_probabilities.zarr"), mode="r")[:], np.float32)
    assert differ.mean() < 1e-4 and np.all(np.abs(probabilities[1] - probabilities[0])[differ] < 2e-3)


def test_tiff_planes_and_probabilities(predict_model: NnunetEnv, tiff_inputs: Path):
    out = predict_model.root / "predict_planes"
    predict_model.run("nnssl_predict", "-i", str(tiff_inputs), "-o", str(out), *PREDICT_ARGS, "--output-format",
                      "tiff-planes", "--save_probabilities")
    planes = sorted((out / "SyntheticLSM_test_000").glob("*.tif"))
    assert len(planes) == 32 and tifffile.imread(planes[0]).shape == (64, 64)
    probabilities = zarr.open_array(str(out / "SyntheticLSM_test_000_probabilities.zarr"), mode="r")
    assert probabilities.shape == (2, 32, 64, 64) and probabilities.dtype == np.float16
    stack = np.stack([tifffile.imread(p) for p in planes])
    values = np.asarray(probabilities[:], np.float32)
    differ = stack != values.argmax(0)
    assert differ.mean() < 1e-3 and np.all(np.abs(values[1] - values[0])[differ] < 2e-3)  # float16 ties only
    assert not (out / "SyntheticLSM_test_000.ome.zarr").exists()


@pytest.mark.parametrize("change, message", [
    ({"-f": "4"}, "fold_4"),
    ({"-tr": "nnUNetTrainerMissing"}, "no trained model there"),
    ({"-i": "missing"}, "no such input folder"),
    ({"-i": "two_d"}, "not 3D"),
    ({"-i": "two_channels"}, "the model takes 1"),
])
def test_bad_input_one_line_errors(predict_model: NnunetEnv, tmp_path: Path, change: dict, message: str):
    inputs = {"missing": tmp_path / "nothing", "two_d": tmp_path / "flat", "two_channels": tmp_path / "pair"}
    (tmp_path / "flat").mkdir()
    tifffile.imwrite(tmp_path / "flat" / "slice.tif", np.zeros((64, 64), np.uint16))
    (tmp_path / "pair").mkdir()
    for channel in range(2):
        tifffile.imwrite(tmp_path / "pair" / f"case_{channel:04d}.tif", np.ones((16, 32, 32), np.uint16))
    args = {"-i": str(tmp_path / "pair"), "-o": str(tmp_path / "out"), **PREDICT_OPTIONS}
    for key, value in change.items():
        args[key] = str(inputs.get(value, value))
    result = predict_model.run("nnssl_predict", *[x for kv in args.items() for x in kv], "--spacing", "2", "1", "1",
                       "--disable_progress_bar", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
