"""A checkpoint in the nnU-Net SSL ecosystem's format (``network_weights`` + ``nnssl_adaptation_plan``,
written by hand, not by nnssl) through the real CLIs: nnssl_plan_like_pretrained -> nnUNetv2_preprocess ->
nnUNetv2_train -tr nnSSLTrainer_*; the transfer report lists the stem and encoder tensors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATASET_ID, SHORT_SSL_TRAINER
from tests.ecosystem_checkpoints import save_ecosystem_checkpoint

pytestmark = pytest.mark.cli
PLANS = "nnsslPlans_ecosystem"


def test_ecosystem_checkpoint_finetunes(nnunet):
    nnunet_plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnUNetPlans.json").read_text())
    spacing = nnunet_plans["configurations"]["3d_fullres"]["spacing"]  # no resampling: a fast preprocess
    checkpoint = nnunet.root / "ecosystem" / "checkpoint_final.pth"
    checkpoint.parent.mkdir()
    save_ecosystem_checkpoint(str(checkpoint), "ResidualEncoderUNet", spacing=spacing, recommended=[16, 32, 32])

    nnunet.run("nnssl_plan_like_pretrained", "-d", str(DATASET_ID), "--pretrained", str(checkpoint),
               "-n", "ecosystem", training=False)
    config = json.loads((nnunet.dataset_dir("preprocessed") / f"{PLANS}.json").read_text())["configurations"]
    assert config["3d_fullres"]["patch_size"] == [16, 32, 32] and config["3d_fullres"]["batch_size"] == 2
    nnunet.run("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", PLANS, "-c", "3d_fullres",
               "-np", "1", training=False)
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-p",
                        PLANS, "-device", "cpu")
    out = result.stdout
    assert f"pretrained weights from {checkpoint}" in out, out[-3000:]
    assert "loaded stem (encoder.stem): " in out and "encoder.stem.convs.0.conv.weight" in out, out[-3000:]
    assert "loaded encoder (encoder.stages): " in out and "encoder.stages.0." in out, out[-3000:]
