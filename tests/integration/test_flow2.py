"""Flow 2 through the real CLIs: standalone nnssl_pretrain -o -> nnssl_plan_like_pretrained ->
nnUNetv2_preprocess -> nnUNetv2_train -tr nnSSLTrainer -p nnsslPlans."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import DATASET_ID, SHORT_SSL_TRAINER

pytestmark = pytest.mark.cli


def test_standalone_pretraining_outputs(flow2_run, nnunet):
    checkpoint = torch.load(flow2_run / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    meta = checkpoint["nnssl_metadata"]
    assert meta["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32]
    assert meta["patch_size"] == [16, 32, 32]
    assert meta["normalization_schemes"] == ["ZScoreNormalization"]
    # intensity statistics come from the images' nonzero region, not from label files
    fingerprint = json.loads((flow2_run / "nnUNet_workspace" / "nnUNet_preprocessed" / "Dataset999_nnsslPretrain"
                              / "dataset_fingerprint.json").read_text())
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert stats["min"] > 0 and stats["max"] > stats["median"]
    # the user's nnU-Net folders are untouched by the standalone run
    assert not list(nnunet.preprocessed.glob("Dataset999_*")) and not list(nnunet.raw.glob("Dataset999_*"))


def test_plan_like_pretrained_then_finetune(nnunet, flow2_run):
    nnunet.run("nnssl_plan_like_pretrained", "-d", str(DATASET_ID), "--pretrained", str(flow2_run),
               "--patch-size", "16", "32", "32", "--batch-size", "2")
    plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnsslPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["data_identifier"] != "nnUNetPlans_3d_fullres"
    nnunet.run("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", "nnsslPlans", "-c", "3d_fullres",
               "-np", "1", training=False)
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-p",
                        "nnsslPlans", "-device", "cpu")
    assert str(flow2_run / "checkpoint_final.pth") in result.stdout, result.stdout[-3000:]
    assert (nnunet.dataset_dir("preprocessed") / "nnUNetPlans_3d_fullres").is_dir()  # nnU-Net's data kept
