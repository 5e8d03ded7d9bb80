import numpy as np
import pytest
import torch

from nnssl.pretraining.methods.losses import BYOLLoss


def reference_byol(p1, p2, z1, z2):
    """BYOL's eq. 2 + 3 with numpy: squared distance of the unit vectors, both directions, batch mean."""
    def unit(v):
        v = v.numpy().astype(np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return float(np.mean(((unit(p1) - unit(z2)) ** 2).sum(1) + ((unit(p2) - unit(z1)) ** 2).sum(1)))


def test_matches_hand_written_reference():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(4, 8, generator=g) for _ in range(4))
    assert BYOLLoss()(p1, p2, z1, z2).item() == pytest.approx(reference_byol(p1, p2, z1, z2), rel=1e-5)


@pytest.mark.parametrize("direction, expected", [(1.0, 0.0), (-1.0, 8.0)])
def test_analytic_values_for_aligned_and_opposite(direction, expected):
    z = torch.tensor([[1.0, 2.0, 2.0]])
    assert BYOLLoss()(direction * 5 * z, direction * z, z, z).item() == pytest.approx(expected, abs=1e-6)


def test_orthogonal_predictions_give_4():
    p, z = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert BYOLLoss()(p, p, z, z).item() == pytest.approx(4.0)


def test_targets_get_no_gradient():
    p1, p2 = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    z1, z2 = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    BYOLLoss()(p1, p2, z1, z2).backward()
    assert p1.grad is not None and z1.grad is None and z2.grad is None
