"""The pretraining loop with every method: what it optimizes, freezes, saves and restores."""

from __future__ import annotations

import pytest
import torch

from nnssl.nnunet_adapter.network_parts import decoder_parameters
from nnssl.pretraining.engine.loop import PretrainingLoop
from nnssl.pretraining.engine.settings import PretrainData, PretrainSettings
from nnssl.pretraining.methods.registry import available_methods, get_method
from tests.unit.test_nnssl_trainer import DATASET_JSON, tiny_plans

CPU = torch.device("cpu")


def pretrainer(name: str, tmp_path, seed: int = 0) -> PretrainingLoop:
    torch.manual_seed(seed)
    data = PretrainData(tiny_plans(), "3d_fullres", DATASET_JSON, str(tmp_path), identifiers=[])
    settings = PretrainSettings(method=name, epochs=2, iterations_per_epoch=2)
    return PretrainingLoop(data, settings, str(tmp_path), CPU, progress_bar=False)


@pytest.mark.parametrize("name", available_methods())
def test_optimizer_holds_exactly_the_trainable_parameters(name, tmp_path):
    trainer = pretrainer(name, tmp_path)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    decoder = {id(p) for p in decoder_parameters(trainer.network)}
    heads = {id(p) for p in trainer.ssl_model.heads.parameters() if p.requires_grad}
    assert heads <= optimized
    if get_method(name).trains_decoder:
        assert decoder <= optimized
    else:  # frozen: no optimizer state, no weight decay moving it
        assert not decoder & optimized
    assert all(p.requires_grad for p in trainer.network.encoder.parameters())


@pytest.mark.parametrize("name", available_methods())
def test_checkpoint_round_trip_restores_method_state(name, tmp_path):
    """A step, a checkpoint, a fresh loop restored from it: network, method modules (e.g. BYOL's
    momentum target) and optimizer state are the saved ones."""
    first = pretrainer(name, tmp_path / "a", seed=0)
    first.train_step(torch.randn(2, 1, 16, 32, 32))
    checkpoint = first.checkpoint()
    assert set(checkpoint["method_state"]) == set(first.ssl_model.heads.state_dict())
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    second = pretrainer(name, tmp_path / "b", seed=1)
    second.restore(str(path))
    for mine, saved in ((second.network.state_dict(), checkpoint["network_weights"]),
                        (second.ssl_model.heads.state_dict(), checkpoint["method_state"])):
        assert all(torch.equal(mine[k], saved[k]) for k in saved)
    assert second.optimizer.state_dict()["state"].keys() == first.optimizer.state_dict()["state"].keys()
