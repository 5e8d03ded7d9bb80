"""``nnUNetv2_train ... -num_gpus N``: trainer discovery and the pretrained-weights lookup in spawned workers.

nnU-Net's ``run_training`` starts one worker per GPU with ``torch.multiprocessing.spawn`` and asserts CUDA,
so on a CPU machine the same mechanism is exercised directly: ``nnUNet_extTrainer`` is removed from this
process's environment (the package's start-up hook must supply it in each worker), two workers are spawned
and each builds ``nnSSLTrainer`` through nnU-Net's own ``get_trainer_from_args`` and initializes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import nnssl
from tests.conftest import DATASET_ID, TINY_CONFIGURATION

pytestmark = pytest.mark.cli

NUM_WORKERS = 2
FOLD = 4  # a fold no other test trains
ENCODER_KEYS = (
    "encoder.stages.0.0.convs.0.conv.weight",
    "encoder.stages.0.0.convs.0.norm.weight",
    "encoder.stages.2.0.convs.1.conv.weight",
)
DECODER_KEY = "decoder.stages.0.convs.0.conv.weight"
TRAINER_SHIM_FOLDER = str(Path(nnssl.__file__).parent / "trainers" / "nnunet_ext")


def _worker(rank: int, out_dir: str) -> None:
    """One spawned worker: nnU-Net's trainer lookup, ``initialize()``, and a JSON report in ``out_dir``."""
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = get_trainer_from_args(str(DATASET_ID), TINY_CONFIGURATION, FOLD, "nnSSLTrainer", "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.initialize()
    state = trainer.network.state_dict()
    checkpoint = torch.load(trainer.pretrained_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    report = {
        "pid": os.getpid(),
        "ext_trainer": os.environ.get("nnUNet_extTrainer", ""),
        "trainer_class": type(trainer).__name__,
        "trainer_module": type(trainer).__module__,
        "is_nnunet_trainer": isinstance(trainer, nnUNetTrainer),
        "checkpoint": trainer.pretrained_checkpoint,
        "encoder_equal": {key: torch.equal(state[key], checkpoint[key]) for key in ENCODER_KEYS},
        "decoder_equal": torch.equal(state[DECODER_KEY], checkpoint[DECODER_KEY]),
    }
    Path(out_dir, f"rank_{rank}.json").write_text(json.dumps(report))


@pytest.mark.timeout(600)
def test_spawned_workers_find_nnssl_trainer_and_pretrained_weights(nnunet, flow1_run, tmp_path, monkeypatch):
    for key, value in nnunet.env().items():
        if key.startswith("nnUNet") and key != "nnUNet_extTrainer":
            monkeypatch.setenv(key, value)  # workers inherit os.environ at spawn time
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    monkeypatch.delenv("nnssl_pretrained_weights", raising=False)
    assert "nnUNet_extTrainer" not in os.environ

    mp.spawn(_worker, args=(str(tmp_path),), nprocs=NUM_WORKERS, join=True)

    reports = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in range(NUM_WORKERS)]
    expected_checkpoint = os.path.realpath(flow1_run / "checkpoint_final.pth")
    assert len({r["pid"] for r in reports} | {os.getpid()}) == NUM_WORKERS + 1
    for rank, report in enumerate(reports):
        assert TRAINER_SHIM_FOLDER in report["ext_trainer"].split(os.pathsep), (rank, report)
        assert report["trainer_class"] == "nnSSLTrainer" and report["is_nnunet_trainer"], (rank, report)
        assert report["trainer_module"] == "nnssl.trainers.nnssl_trainer", (rank, report)
        assert os.path.realpath(report["checkpoint"]) == expected_checkpoint, (rank, report)
        assert all(report["encoder_equal"].values()), (rank, report)
        assert not report["decoder_equal"], (rank, report)  # default scope: encoder only
    assert "nnUNet_extTrainer" not in os.environ  # the workers' environment did not leak back
