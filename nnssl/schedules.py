"""nnU-Net's poly learning-rate decay with an optional linear warm-up, written once: the pretraining loop (no
warm-up) and the fine-tuning trainers' schedulers (``nnssl.trainers.lr_schedule``) both use it."""

from __future__ import annotations

POLY_EXPONENT = 0.9


def warmup_poly_lr(
    step: int, initial_lr: float, max_steps: int, warmup_steps: int, exponent: float = POLY_EXPONENT
) -> float:
    """The learning rate at ``step`` (an epoch, as nnU-Net counts it).

    Warm-up (``step < warmup_steps``): ``initial_lr * (step + 1) / (warmup_steps + 1)``, a line from
    ~0 that would reach ``initial_lr`` at ``warmup_steps``. Then nnU-Net's poly decay over the remaining
    steps: ``initial_lr * (1 - (step - warmup_steps) / (max_steps - warmup_steps)) ** exponent``.
    With ``warmup_steps == 0`` this is exactly nnU-Net's ``PolyLRScheduler``.
    """
    if step < warmup_steps:
        return initial_lr * (step + 1) / (warmup_steps + 1)
    decay_steps = max(max_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return initial_lr * (1 - progress) ** exponent
