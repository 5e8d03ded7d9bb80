"""The short frozen-encoder variant through the real CLI, after flow 1's pretraining."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import DATASET_ID, TINY_CONFIGURATION

pytestmark = pytest.mark.cli
TRAINER = "nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring"


def test_frozen_encoder_variant_trains_end_to_end(nnunet, flow1_run):
    nnunet.run("nnUNetv2_train", str(DATASET_ID), TINY_CONFIGURATION, "2", "-tr", TRAINER, "-device", "cpu")
    fold = nnunet.dataset_dir("results") / f"{TRAINER}__nnUNetPlans__{TINY_CONFIGURATION}" / "fold_2"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "encoder frozen for 1 epochs" in log and "unfreezing the encoder at epoch 1" in log
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    groups = checkpoint["optimizer_state"]["param_groups"]
    assert [(g["name"], g["lr_scale"]) for g in groups] == [("decoder_and_head", 1.0), ("encoder", 1.0)]
    pretrained = torch.load(flow1_run / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert not torch.equal(checkpoint["network_weights"][key], pretrained["network_weights"][key])  # trained after
