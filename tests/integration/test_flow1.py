"""Flow 1 through the real CLIs: nnU-Net dataset -> nnssl_pretrain -d -> nnUNetv2_train/predict -tr nnSSLTrainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    DATASET_ID,
    PRETRAIN_SCHEDULE,
    SHORT_SSL_TRAINER,
    SHORT_STOCK_TRAINER,
    TINY_CONFIGURATION,
    add_tiny_configuration,
)

pytestmark = pytest.mark.cli


def test_pretraining_outputs(flow1_run):
    for name in ("checkpoint_final.pth", "plans.json", "dataset.json", "training_log.txt", "progress.png",
                 "nnssl_run.json"):
        assert (flow1_run / name).is_file(), name
    assert not (flow1_run / "checkpoint_latest.pth").exists()
    assert list((flow1_run / "previews").glob("epoch_*.png"))
    checkpoint = torch.load(flow1_run / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    meta = checkpoint["nnssl_metadata"]
    assert meta["method"] == "mae" and meta["configuration"] == TINY_CONFIGURATION
    assert meta["plans_name"] == "nnUNetPlans" and meta["num_input_channels"] == 1
    assert meta["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32]
    assert all(t.device.type == "cpu" for t in checkpoint["network_weights"].values())
    assert len(checkpoint["logging"]["train_losses"]) == 2


def test_unlabeled_data_stays_out_of_nnunet_folders(nnunet, flow1_run, unlabeled_folder):
    preprocessed = nnunet.dataset_dir("preprocessed")
    nnssl_folder = preprocessed / "nnssl_nnUNetPlans_3d_fullres"
    unlabeled_ids = {p.name.removesuffix("_0000.nii.gz") for p in unlabeled_folder.iterdir()}
    assert {p.name.removesuffix(".b2nd") for p in nnssl_folder.glob("*.b2nd") if "_seg" not in p.name} == unlabeled_ids
    nnunet_ids = {p.name.removesuffix(".pkl") for p in (preprocessed / "nnUNetPlans_3d_fullres").glob("*.pkl")}
    assert nnunet_ids and not nnunet_ids & unlabeled_ids


def test_finetune_predict_and_splits(nnunet, flow1_run, unlabeled_folder):
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), TINY_CONFIGURATION, "0", "-tr", SHORT_SSL_TRAINER,
                        "-device", "cpu")
    assert "loaded" in result.stdout and "checkpoint_final.pth" in result.stdout, result.stdout[-3000:]
    fold = nnunet.dataset_dir("results") / f"{SHORT_SSL_TRAINER}__nnUNetPlans__{TINY_CONFIGURATION}" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    splits = json.loads((nnunet.dataset_dir("preprocessed") / "splits_final.json").read_text())
    unlabeled_ids = {p.name.removesuffix("_0000.nii.gz") for p in unlabeled_folder.iterdir()}
    for split in splits:
        assert not (set(split["train"]) | set(split["val"])) & unlabeled_ids
    out = nnunet.root / "pred_flow1"
    nnunet.run("nnUNetv2_predict", "-i", str(nnunet.dataset_dir("raw") / "imagesTs"), "-o", str(out), "-d",
               str(DATASET_ID), "-c", TINY_CONFIGURATION, "-f", "0", "-tr", SHORT_SSL_TRAINER, "-device", "cpu",
               "--disable_progress_bar", "-npp", "1", "-nps", "1", "--disable_tta")
    assert len(list(out.glob("*.nii.gz"))) == 2


def test_stock_pretrained_weights_loads_checkpoint(nnunet, flow1_run):
    """The checkpoint's network_weights load with nnU-Net's own -pretrained_weights (asserts every key)."""
    nnunet.run("nnUNetv2_train", str(DATASET_ID), TINY_CONFIGURATION, "1", "-tr", SHORT_STOCK_TRAINER, "-device",
               "cpu", "-pretrained_weights", str(flow1_run / "checkpoint_final.pth"))


def test_nnunet_repreprocessing_keeps_nnssl_data(nnunet, flow1_run):
    nnssl_folder = nnunet.dataset_dir("preprocessed") / "nnssl_nnUNetPlans_3d_fullres"
    before = sorted(p.name for p in nnssl_folder.iterdir())
    nnunet.run("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", training=False)
    assert sorted(p.name for p in nnssl_folder.iterdir()) == before


def test_stock_trainer_and_nnssl_trainer_in_process(nnunet, flow1_run, monkeypatch):
    """Stock nnUNetTrainer's network takes the weights via load_pretrained_weights; nnSSLTrainer's
    initialize() leaves the encoder equal to the checkpoint's."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnssl.trainers import nnSSLTrainer

    for key, value in nnunet.env().items():
        if key.startswith("nnUNet"):
            monkeypatch.setenv(key, value)
    checkpoint_file = flow1_run / "checkpoint_final.pth"
    weights = torch.load(checkpoint_file, map_location="cpu", weights_only=True)["network_weights"]
    plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((nnunet.dataset_dir("preprocessed") / "dataset.json").read_text())
    for trainer_class in (nnUNetTrainer, nnSSLTrainer):
        trainer = trainer_class(dict(plans, continue_training=False), TINY_CONFIGURATION, 3, dataset_json,
                                device=torch.device("cpu"))
        trainer.initialize()
        if trainer_class is nnUNetTrainer:
            load_pretrained_weights(trainer.network, str(checkpoint_file), verbose=False)
        state = trainer.network.state_dict()
        encoder_keys = [k for k in weights if k.startswith("encoder.")]
        assert encoder_keys
        for key in encoder_keys:
            assert torch.equal(state[key], weights[key]), key


IGNORE_DATASET_ID = 502


def test_dataset_with_an_ignore_label(nnunet, unlabeled_folder):
    """Sparse annotations (nnU-Net's ``ignore`` label): pretraining never looks at labels, so it runs as for any
    dataset (it died in a data-loader worker: KeyError in nnU-Net's get_bbox), and fine-tuning starts from it."""
    import numpy as np
    import SimpleITK as sitk

    from tests.synthetic import write_labeled_dataset

    raw = Path(write_labeled_dataset(str(nnunet.raw), IGNORE_DATASET_ID, name="Sparse", num_test_cases=0))
    for label_file in (raw / "labelsTr").glob("*.nii.gz"):
        image = sitk.ReadImage(str(label_file))
        labels = sitk.GetArrayFromImage(image)
        labels[:, 32:] = 2  # half of each case annotated
        sparse = sitk.GetImageFromArray(labels)
        sparse.CopyInformation(image)
        sitk.WriteImage(sparse, str(label_file))
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["labels"]["ignore"] = 2
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    dataset = str(IGNORE_DATASET_ID)
    nnunet.run("nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "-npfp", "1", "-np", "1",
               "--no_pbar", training=False)
    add_tiny_configuration(nnunet.preprocessed / raw.name / "nnUNetPlans.json")
    nnunet.run("nnssl_pretrain", "-d", dataset, "-i", str(unlabeled_folder), "-c", TINY_CONFIGURATION,
               *PRETRAIN_SCHEDULE)
    assert (nnunet.results / raw.name / f"nnsslPretrain_mae__nnUNetPlans__{TINY_CONFIGURATION}" /
            "checkpoint_final.pth").is_file()
    result = nnunet.run("nnUNetv2_train", dataset, TINY_CONFIGURATION, "0", "-tr", SHORT_SSL_TRAINER, "-device", "cpu")
    assert "loaded" in result.stdout and "checkpoint_final.pth" in result.stdout, result.stdout[-3000:]
    losses = torch.load(nnunet.results / raw.name / f"{SHORT_SSL_TRAINER}__nnUNetPlans__{TINY_CONFIGURATION}" /
                        "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    assert np.isfinite(losses["train_losses"]).all()
