import pytest
import torch

from nnssl.pretraining.methods.losses import MaskedMSELoss


def reference_masked_mse(prediction, target, mask):
    """Hand-written loop: mean of squared errors over masked voxels of every channel."""
    total, count = 0.0, 0
    b, c, z, y, x = prediction.shape
    for i in range(b):
        for ch in range(c):
            for k in range(z):
                for j in range(y):
                    for m in range(x):
                        if mask[i, 0, k, j, m] > 0:
                            total += float(prediction[i, ch, k, j, m] - target[i, ch, k, j, m]) ** 2
                            count += 1
    return total / count


def test_matches_hand_written_reference():
    g = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 2, 3, 4, 5, generator=g), torch.randn(2, 2, 3, 4, 5, generator=g)
    mask = (torch.rand(2, 1, 3, 4, 5, generator=g) > 0.4).float()
    loss = MaskedMSELoss()(prediction, target, mask)
    assert loss.item() == pytest.approx(reference_masked_mse(prediction, target, mask), rel=1e-5)


def test_visible_voxels_carry_no_loss_and_analytic_value():
    target = torch.zeros(1, 1, 2, 2, 2)
    prediction = torch.full_like(target, 3.0)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[0, 0, 0] = 1  # half of the voxels masked
    prediction[0, 0, 1] = 100.0  # large errors on visible voxels must not count
    assert MaskedMSELoss()(prediction, target, mask).item() == pytest.approx(9.0)


def test_gradient_only_through_masked_voxels():
    prediction = torch.randn(1, 1, 2, 2, 2, requires_grad=True)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0, 0, 0] = 1
    MaskedMSELoss()(prediction, torch.zeros_like(prediction), mask).backward()
    assert prediction.grad[mask == 0].abs().sum() == 0
    assert prediction.grad[mask == 1].abs().sum() > 0
