import pytest
import torch

from nnssl.pretraining.methods.base import SSLModel
from nnssl.pretraining.methods.byol import momentum_at
from nnssl.pretraining.methods.registry import create_method
from tests.tiny_networks import PATCH, tiny_unet


@pytest.mark.parametrize("progress, expected", [(0.0, 0.996), (0.5, 0.998), (1.0, 1.0)])
def test_cosine_momentum_schedule(progress, expected):
    assert momentum_at(progress, 0.996) == pytest.approx(expected)


def make_model():
    method = create_method("byol", PATCH, 1, {"hidden_dim": 32, "projection_dim": 8})
    network = tiny_unet()
    return SSLModel(network, method.build_heads(network), method), method


def test_target_starts_as_copy_and_gets_no_gradient():
    model, _ = make_model()
    online, target = model.network.encoder.state_dict(), model.heads["target_encoder"].state_dict()
    assert all(torch.equal(online[k], target[k]) for k in online)
    out = model(torch.randn(2, 1, *PATCH), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.heads["target_encoder"].parameters())
    assert all(p.grad is not None for p in model.heads["predictor"].parameters())


def test_momentum_update_moves_target_by_one_minus_tau():
    model, method = make_model()
    online = next(model.network.encoder.parameters())
    target = next(model.heads["target_encoder"].parameters())
    before = target.detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    method.after_optimizer_step(model, 0.0)  # tau = 0.996
    assert torch.allclose(target, before + 0.004 * (online.detach() - before), atol=1e-6)
    method.after_optimizer_step(model, 1.0)  # tau = 1: the target stays
    assert torch.allclose(target, before + 0.004 * (online.detach() - before), atol=1e-6)
