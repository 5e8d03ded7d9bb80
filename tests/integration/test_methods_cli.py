"""Every registered SSL method besides mae (which the flow tests cover): flow 1 and flow 2 pretraining
through the real CLI, and fine-tuning from the flow-1 checkpoint with nnSSLTrainer."""

from __future__ import annotations

import json

import pytest
import torch

from nnssl.pretraining.methods.registry import available_methods, method_arguments
from tests.conftest import DATASET_ID, TINY_CONFIGURATION

pytestmark = pytest.mark.cli

METHODS = [name for name in available_methods() if name != "mae"]
SCHEDULE = ["--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "1", "-device", "cpu",
            "--num-workers", "0", "--no-pbar"]
# one non-default setting per method, to check --method-arg reaches the checkpoint
METHOD_ARG = {"sparkmae": ("mask_ratio", "0.5", 0.5), "simclr": ("temperature", "0.2", 0.2),
              "byol": ("hidden_dim", "64", 64), "modelsgenesis": ("local_rate", "1.0", 1.0)}


def method_arg(name: str) -> tuple[str, str, object]:
    if name in METHOD_ARG:
        return METHOD_ARG[name]
    key, default = next(iter(method_arguments(name).items()))  # a method added later: its first setting
    return key, str(default), default


@pytest.mark.parametrize("name", METHODS)
def test_flow1_pretrain_then_finetune(nnunet, unlabeled_folder, name, tmp_path, monkeypatch):
    """Flow 1 through the CLI; then nnSSLTrainer (in this process: the fine-tuning CLI path does not
    depend on the method and the flow tests run it) loads the method's encoder and takes one step."""
    results = tmp_path / "results"  # own results folder: the flow-1 lookup finds this method's checkpoint only
    key, value, expected = method_arg(name)
    nnunet.run("nnssl_pretrain", "-d", str(DATASET_ID), "-i", str(unlabeled_folder), "-c", TINY_CONFIGURATION,
               "-m", name, "--method-arg", f"{key}={value}", *SCHEDULE, nnUNet_results=str(results))
    run = next(results.glob(f"Dataset{DATASET_ID:03d}_*")) / f"nnsslPretrain_{name}__nnUNetPlans__{TINY_CONFIGURATION}"
    checkpoint = torch.load(run / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    meta = checkpoint["nnssl_metadata"]
    assert meta["method"] == name and meta["method_settings"][key] == expected
    assert checkpoint["nnssl_adaptation_plan"]["key_to_encoder"] == meta["key_to_encoder"]
    trainer = finetuning_trainer(nnunet, results, monkeypatch)
    state, weights = trainer.network.state_dict(), checkpoint["network_weights"]
    encoder_keys = [k for k in weights if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(state[k], weights[k]) for k in encoder_keys)
    batch = next(iter(trainer.dataloader_train))
    assert torch.isfinite(torch.as_tensor(trainer.train_step(batch)["loss"]))


def finetuning_trainer(nnunet, results, monkeypatch):
    """``nnSSLTrainer_2epochs_5iters_noMirroring`` for fold 0 of the tiny configuration, initialized
    (pretrained weights loaded) and with its data loaders, as ``nnUNetv2_train`` sets it up."""
    from nnssl.trainers import nnSSLTrainer_2epochs_5iters_noMirroring

    for env_key, env_value in nnunet.env(nnUNet_results=str(results)).items():
        if env_key.startswith("nnUNet"):
            monkeypatch.setenv(env_key, env_value)
    plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((nnunet.dataset_dir("preprocessed") / "dataset.json").read_text())
    trainer = nnSSLTrainer_2epochs_5iters_noMirroring(dict(plans, continue_training=False), TINY_CONFIGURATION, 0,
                                                      dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    return trainer


@pytest.mark.parametrize("name", METHODS)
def test_flow2_standalone_pretraining(nnunet, unlabeled_folder, name, tmp_path):
    out = tmp_path / f"standalone_{name}"
    nnunet.run("nnssl_pretrain", "-i", str(unlabeled_folder), "-o", str(out), "-m", name, "--features-per-stage",
               "8", "16", "32", "--patch-size", "16", "32", "32", "-b", "2", *SCHEDULE)
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["nnssl_metadata"]["method"] == name
    assert checkpoint["nnssl_metadata"]["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32]
    assert (out / "previews").is_dir() or (out / "progress.png").is_file()
