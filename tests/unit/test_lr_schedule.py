"""WarmupPolyLRScheduler: analytic warm-up and poly values, nnU-Net's PolyLRScheduler API and values; the
fine-tuning schedule (peak 1e-3, warm-up 5% of the epochs) for short and long trainings."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnssl.trainers.lr_schedule import (
    FINE_TUNING_INITIAL_LR,
    WARMUP_FRACTION,
    WarmupPolyLRScheduler,
    epochs_for_fraction,
    warmup_epochs_for,
    warmup_poly_lr,
)

LR = 1e-2


def make_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=LR, momentum=0.99, nesterov=True)


def lr_at(scheduler: WarmupPolyLRScheduler, epoch: int) -> float:
    scheduler.step(epoch)
    return scheduler.optimizer.param_groups[0]["lr"]


def test_warmup_is_linear_from_near_zero_to_initial_lr():
    scheduler = WarmupPolyLRScheduler(make_optimizer(), LR, max_steps=100, warmup_steps=4)
    assert [lr_at(scheduler, e) for e in range(4)] == pytest.approx([LR * (e + 1) / 5 for e in range(4)])
    assert lr_at(scheduler, 0) == pytest.approx(LR / 5)
    assert lr_at(scheduler, 4) == pytest.approx(LR)


def test_poly_decay_after_warmup():
    scheduler = WarmupPolyLRScheduler(make_optimizer(), LR, max_steps=100, warmup_steps=10)
    for epoch in (10, 11, 50, 99):
        assert lr_at(scheduler, epoch) == pytest.approx(LR * (1 - (epoch - 10) / 90) ** 0.9)
    assert scheduler.get_last_lr() == [pytest.approx(LR * (1 / 90) ** 0.9)]


def test_no_warmup_matches_nnunet_poly():
    ours = WarmupPolyLRScheduler(make_optimizer(), LR, max_steps=20, warmup_steps=0)
    stock = PolyLRScheduler(make_optimizer(), LR, 20)
    for epoch in range(20):
        stock.step(epoch)
        assert lr_at(ours, epoch) == pytest.approx(stock.optimizer.param_groups[0]["lr"])


def test_warmup_clamped_below_num_epochs_and_counter_api():
    scheduler = WarmupPolyLRScheduler(make_optimizer(), LR, max_steps=3, warmup_steps=50)
    assert scheduler.warmup_steps == 2
    # constructor already stepped once (epoch 0), like PolyLRScheduler; step() continues the counter
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(LR * 2 / 3)
    assert warmup_poly_lr(2, LR, 3, 2) == pytest.approx(LR)
    assert warmup_poly_lr(10, LR, 3, 2) == 0.0  # past the end: clamped, never a complex number


def test_lr_scale_multiplies_the_rate_per_group():
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr_scale": 0.5}, {"params": [params[2]], "lr_scale": 0}]
    scheduler = WarmupPolyLRScheduler(torch.optim.SGD(groups, lr=LR), LR, max_steps=100, warmup_steps=0)
    for epoch in (0, 40):
        lr = warmup_poly_lr(epoch, LR, 100, 0)
        assert [lr_at(scheduler, epoch), *scheduler.get_last_lr()[1:]] == pytest.approx([lr, lr / 2, 0.0])


def test_epochs_for_fraction_rounds_half_up_and_clamps():
    assert [epochs_for_fraction(0.05, n, n - 1) for n in (1, 2, 10, 30, 40, 50, 100, 250, 1000)] == [
        0, 1, 1, 2, 2, 3, 5, 13, 50
    ]
    assert epochs_for_fraction(0.29, 50, 49) == 15  # 0.29 * 50 is 14.499999999999998 in floating point
    assert epochs_for_fraction(0.0, 1000, 999) == 0 and epochs_for_fraction(-1.0, 1000, 999) == 0
    assert epochs_for_fraction(0.9, 10, 3) == 3  # at_most wins
    assert epochs_for_fraction(0.5, 3, -1) == 0  # never negative


# Fine-tuning schedule of an N-epoch training with the defaults: W = max(1, round(0.05 N)) warm-up epochs
# (at most N - 1), peak 1e-3 at epoch W, and at the last epoch N - 1: 1e-3 * (1 / (N - W)) ** 0.9.
SCHEDULES = {
    # N: (W, last learning rate)
    2: (1, 1e-3),  # 1 warm-up epoch (5e-4), then the single decaying epoch at the peak
    10: (1, 1e-3 * 9**-0.9),  # 1.384e-4
    40: (2, 1e-3 * 38**-0.9),  # 3.786e-5
    1000: (50, 1e-3 * 950**-0.9),  # 2.090e-6
}


@pytest.mark.parametrize("num_epochs", sorted(SCHEDULES))
def test_fine_tuning_schedule_for_short_and_long_trainings(num_epochs):
    warmup, last = SCHEDULES[num_epochs]
    assert FINE_TUNING_INITIAL_LR == 1e-3 and WARMUP_FRACTION == 0.05
    assert warmup == min(max(1, round(0.05 * num_epochs)), num_epochs - 1)
    # the scheduler exactly as nnSSLTrainer.configure_optimizers builds it (with the default warmup_fraction)
    scheduler = WarmupPolyLRScheduler(
        make_optimizer(), FINE_TUNING_INITIAL_LR, num_epochs, warmup_epochs_for(num_epochs, WARMUP_FRACTION)
    )
    assert scheduler.warmup_steps == warmup
    lrs = [lr_at(scheduler, epoch) for epoch in range(num_epochs)]
    assert lrs[:warmup] == pytest.approx([1e-3 * (e + 1) / (warmup + 1) for e in range(warmup)])
    assert all(a < b for a, b in pairwise(lrs[: warmup + 1]))  # rising during warm-up
    assert max(lrs) == lrs[warmup] == pytest.approx(1e-3)  # the peak, at the first epoch after warm-up
    assert all(a > b for a, b in pairwise(lrs[warmup:]))  # decaying after it
    assert lrs[-1] == pytest.approx(last)
    if num_epochs >= 40:
        assert lrs[-1] < 0.1 * max(lrs)
