import math

import pytest
import torch

from nnssl.pretraining.methods.losses import NTXentLoss


def reference_nt_xent(z1, z2, temperature):
    """SimCLR's eq. 1 written out per anchor with Python floats."""
    z = [v / math.sqrt(sum(float(x) ** 2 for x in v)) for v in torch.cat([z1, z2])]
    n, b = len(z), len(z1)

    def sim(i, j):
        return sum(float(a) * float(c) for a, c in zip(z[i], z[j])) / temperature

    total = 0.0
    for i in range(n):
        positive = (i + b) % n
        denominator = sum(math.exp(sim(i, k)) for k in range(n) if k != i)
        total += -math.log(math.exp(sim(i, positive)) / denominator)
    return total / n


@pytest.mark.parametrize("batch, temperature", [(1, 0.1), (3, 0.5), (4, 1.0)])
def test_matches_hand_written_reference(batch, temperature):
    g = torch.Generator().manual_seed(batch)
    z1, z2 = torch.randn(batch, 6, generator=g), torch.randn(batch, 6, generator=g)
    loss = NTXentLoss(temperature)(z1, z2)
    assert loss.item() == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-5)


def test_identical_embeddings_give_log_2b_minus_1():
    z = torch.ones(5, 3)
    assert NTXentLoss(0.2)(z, z).item() == pytest.approx(math.log(2 * 5 - 1), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_aligned_pairs_orthogonal_negatives(temperature):
    """Each pair aligned (at any scale), the 6 negatives orthogonal: log(1 + 6 exp(-1 / t))."""
    basis = torch.eye(4)
    loss = NTXentLoss(temperature)(basis, 3 * basis).item()
    # float32 computes -log(1 + 6 exp(-1 / t)) from a softmax denominator near 1, whose spacing is 1.2e-7:
    # at t = 0.1 (loss 2.72e-4) that is 4e-4 of the value, so a relative tolerance alone depends on the CPU.
    assert loss == pytest.approx(math.log(1 + 6 * math.exp(-1 / temperature)), rel=1e-4, abs=1e-6)


def test_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
