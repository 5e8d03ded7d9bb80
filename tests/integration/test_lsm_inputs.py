"""Light-sheet inputs through the real ``nnssl_pretrain``: BigTIFF, folders of 2D planes and OME-Zarr, each
preprocessed block by block (``--blockwise-min-voxels 0``) and pretrained end to end, in both flows."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from tests import lsm_files
from tests.conftest import DATASET_ID, PRETRAIN_SCHEDULE, TINY_CONFIGURATION

pytestmark = pytest.mark.cli

SHAPE = (40, 96, 96)
SMALL_NETWORK = ["--features-per-stage", "8", "16", "32", "--patch-size", "16", "32", "32", "-b", "2"]


def _write(kind: str, folder, n_cases: int = 2) -> None:
    folder.mkdir(parents=True)
    for i in range(n_cases):
        make_slab = lsm_files.lsm_like_slab(SHAPE, seed=10 + i, tissue_radius=0.3)
        if kind == "bigtiff":
            lsm_files.write_bigtiff(str(folder / f"organ{i}.tiff"), SHAPE, np.uint16, make_slab, (2.0, 1.0, 1.0))
        elif kind == "planes":
            lsm_files.write_plane_folder(str(folder / f"organ{i}"), SHAPE, make_slab, (2.0, 1.0, 1.0))
        else:
            lsm_files.write_ome_zarr(str(folder / f"organ{i}.ome.zarr"), SHAPE, np.uint16, make_slab,
                                     (2.0, 1.0, 1.0), levels=2, chunks=(16, 32, 32))


def _preprocessed_properties(run) -> list[dict]:
    folder = next((run / "nnUNet_workspace" / "nnUNet_preprocessed" / "Dataset999_nnsslPretrain").glob("nnssl_*"))
    return [pickle.loads(p.read_bytes()) for p in sorted(folder.glob("*.pkl"))]


@pytest.mark.parametrize("kind", ["bigtiff", "planes", "omezarr"])
def test_standalone_pretraining_on_each_format(nnunet, tmp_path, kind):
    _write(kind, tmp_path / "in")
    out = tmp_path / "run"
    result = nnunet.run("nnssl_pretrain", "-i", str(tmp_path / "in"), "-o", str(out), *SMALL_NETWORK,
                        "--blockwise-min-voxels", "0", *PRETRAIN_SCHEDULE)
    assert "block by block" in result.stderr
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert len(checkpoint["logging"]["train_losses"]) == 2
    assert checkpoint["nnssl_metadata"]["spacing"] == [2.0, 1.0, 1.0]
    properties = _preprocessed_properties(out)
    assert len(properties) == 2 and all(p["nnssl_blockwise"] for p in properties)
    assert all(len(p["class_locations"][1]) > 0 for p in properties)  # tissue found in every case


def test_two_channel_ome_zarr(nnunet, tmp_path):
    """One OME-Zarr image with a channel axis is one 2-channel case."""
    import zarr

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        make_slab = lsm_files.lsm_like_slab(SHAPE, seed=20 + i)
        data = np.stack([make_slab(0, SHAPE[0]), make_slab(0, SHAPE[0])[:, ::-1]])  # vessels + autofluorescence
        root = zarr.open_group(str(folder / f"brain{i}.ome.zarr"), mode="w", zarr_format=2)
        root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 16, 48, 48))[...] = data
        root.attrs["multiscales"] = [{"version": "0.4", "axes": [
            {"name": "c", "type": "channel"}, *({"name": a, "type": "space"} for a in "zyx")],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 1, 1]}]}]}]
    out = tmp_path / "run"
    nnunet.run("nnssl_pretrain", "-i", str(folder), "-o", str(out), *SMALL_NETWORK, "--blockwise-min-voxels", "0",
               "--channel-names", "vessels", "autofluorescence", *PRETRAIN_SCHEDULE)
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["nnssl_metadata"]["num_input_channels"] == 2
    stem = checkpoint["nnssl_adaptation_plan"]["keys_to_in_proj"][0]
    assert checkpoint["network_weights"][stem + ".weight"].shape[1] == 2


def test_flow1_reads_the_ome_zarr_level_of_the_plans_spacing(nnunet, tmp_path):
    """Flow 1 pretrains with the dataset's plans (spacing 2 1 1): of an OME-Zarr with levels at 1 0.5 0.5 and
    2 1 1, level 1 is read, so no resampling is needed."""
    # a copy of the dataset's plans under another name keeps this run apart from the other flow-1 runs
    preprocessed = nnunet.dataset_dir("preprocessed")
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "lsmPlans"
    plans["configurations"][TINY_CONFIGURATION]["data_identifier"] = "lsmPlans_3d_tiny"
    (preprocessed / "lsmPlans.json").write_text(json.dumps(plans))
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        lsm_files.write_ome_zarr(str(folder / f"organ{i}.ome.zarr"), (64, 128, 128), np.uint16,
                                 lsm_files.lsm_like_slab((64, 128, 128), seed=30 + i), (1.0, 0.5, 0.5), levels=2,
                                 chunks=(16, 64, 64))
    result = nnunet.run("nnssl_pretrain", "-d", str(DATASET_ID), "-i", str(folder), "-p", "lsmPlans", "-c",
                        TINY_CONFIGURATION, "--blockwise-min-voxels", "0", *PRETRAIN_SCHEDULE)
    assert "using multiscale level '1' (spacing [2.0, 1.0, 1.0])" in result.stderr, result.stderr[-2000:]
    data_folder = preprocessed / "nnssl_lsmPlans_3d_tiny"
    properties = pickle.loads((data_folder / "organ0.pkl").read_bytes())
    assert properties["shape_before_cropping"] == [32, 64, 64]  # level 1 of 64 x 128 x 128
    run = nnunet.dataset_dir("results") / f"nnsslPretrain_mae__lsmPlans__{TINY_CONFIGURATION}"
    assert (run / "checkpoint_final.pth").is_file()


def test_killed_preprocessing_resumes(nnunet, tmp_path):
    """SIGKILL while a volume is preprocessed block by block; ``--continue`` resumes at the next slab."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import BIN

    shape = (192, 512, 512)
    (tmp_path / "in").mkdir()
    lsm_files.write_bigtiff(str(tmp_path / "in" / "organ.tiff"), shape, np.uint16,
                            lsm_files.lsm_like_slab(shape, seed=3), (2.0, 1.0, 1.0))
    out = tmp_path / "run"
    args = ["-i", str(tmp_path / "in"), "-o", str(out), *SMALL_NETWORK, "--blockwise-min-voxels", "0",
            *PRETRAIN_SCHEDULE]
    process = subprocess.Popen([str(BIN / "nnssl_pretrain"), *args], env=nnunet.env(), cwd=nnunet.root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    saved_slab = "nnUNet_workspace/nnUNet_preprocessed/*/nnssl_*.partial/organ.inprogress/progress.json"
    progress = list(out.glob(saved_slab))
    while not progress and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
        progress = list(out.glob(saved_slab))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert progress, "preprocessing finished before it could be interrupted; make the volume larger"
    assert not (out / "checkpoint_final.pth").exists()
    result = nnunet.run("nnssl_pretrain", *args, "--continue")
    assert "preprocessing was interrupted" in result.stderr
    assert "resuming block-wise preprocessing at slab" in result.stderr, result.stderr[-2000:]
    assert (out / "checkpoint_final.pth").is_file()
