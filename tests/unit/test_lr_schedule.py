"""WarmupPolyLRScheduler: analytic warm-up and poly values, nnU-Net's PolyLRScheduler API and values."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnssl.trainers.lr_schedule import WarmupPolyLRScheduler, warmup_poly_lr

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
