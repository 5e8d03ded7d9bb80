"""Learning-rate schedule for fine-tuning pretrained weights: linear warm-up, then nnU-Net's poly decay.

The fine-tuning defaults follow nnU-Net's own SSL fine-tuning (``PretrainedTrainer``,
``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py``): peak learning rate
``FINE_TUNING_INITIAL_LR`` (1e-3, nnU-Net's 1e-2 is for training from scratch) and a warm-up of
``WARMUP_FRACTION`` of the epochs (50 of 1000), then poly decay. The warm-up length is a fraction, not a
number of epochs, so that a shorter training (``num_epochs`` 40, say) still warms up briefly and decays.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from nnssl.schedules import POLY_EXPONENT, warmup_poly_lr

LR_SCALE = "lr_scale"
"""Parameter-group key: the group's multiplier of the scheduled learning rate (1.0 when absent)."""

FINE_TUNING_INITIAL_LR = 1e-3
"""Peak learning rate when fine-tuning pretrained weights (nnU-Net's PretrainedTrainer; 1e-2 from scratch)."""

WARMUP_FRACTION = 0.05
"""Default warm-up length as a fraction of ``num_epochs`` (nnU-Net's PretrainedTrainer: 50 of 1000)."""

def epochs_for_fraction(fraction: float, num_epochs: int, at_most: int) -> int:
    """``fraction * num_epochs`` epochs, rounded half up, at least 1 when ``fraction > 0``, at most
    ``at_most`` (and never negative). ``fraction <= 0`` gives 0.

    Examples with 0.05: 2 -> 1, 10 -> 1, 40 -> 2, 100 -> 5, 250 -> 13, 1000 -> 50 (before ``at_most``).
    """
    if fraction <= 0:
        return 0
    # round(.., 9) first: a product meant to end in .5 can land a hair below it (0.29 * 50 = 14.499999999999998).
    epochs = max(1, math.floor(round(fraction * num_epochs, 9) + 0.5))
    return max(0, min(epochs, at_most))


def warmup_epochs_for(num_epochs: int, fraction: float = WARMUP_FRACTION) -> int:
    """Warm-up epochs of a ``num_epochs`` training: ``epochs_for_fraction``, leaving at least one epoch
    (the peak) to the poly decay, i.e. at most ``num_epochs - 1``."""
    return epochs_for_fraction(fraction, num_epochs, num_epochs - 1)


class WarmupPolyLRScheduler(LRScheduler):
    """Drop-in for nnU-Net's ``PolyLRScheduler`` (same ``step(current_step)`` API) with a linear warm-up.

    nnU-Net calls ``step(self.current_epoch)`` in ``on_train_epoch_start``, so the schedule is a pure
    function of the epoch and survives ``--c`` without saved scheduler state. ``warmup_steps`` is
    clamped to ``[0, max_steps - 1]`` so that at least one epoch decays.

    A parameter group with an ``lr_scale`` entry gets ``lr_scale`` times the scheduled rate (groups
    without one get the rate itself): fine-tuning variants use it to freeze (scale 0) or slow down
    (layer-wise decay) parts of the network while one schedule drives all groups.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        initial_lr: float,
        max_steps: int,
        warmup_steps: int,
        exponent: float = POLY_EXPONENT,
        current_step: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = max(0, min(int(warmup_steps), max_steps - 1))
        self.exponent = exponent
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None) -> None:  # type: ignore[override]
        # Same counter semantics as nnU-Net's PolyLRScheduler: no argument -> internal counter.
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = self.lr_at(current_step)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = new_lr * param_group.get(LR_SCALE, 1.0)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def lr_at(self, step: int) -> float:
        """The scheduled rate at ``step`` (before any group's ``lr_scale``): ``warmup_poly_lr``."""
        return warmup_poly_lr(step, self.initial_lr, self.max_steps, self.warmup_steps, self.exponent)

    def with_optimizer(self, optimizer: Optimizer) -> WarmupPolyLRScheduler:
        """The same schedule driving ``optimizer`` (e.g. the optimizer regrouped into parameter groups)."""
        return WarmupPolyLRScheduler(optimizer, self.initial_lr, self.max_steps, self.warmup_steps, self.exponent)


def sawtooth_phases(num_epochs: int, decoder_fraction: float, warmup_fraction: float) -> tuple[int, int, int]:
    """(decoder epochs ``D``, decoder warm-up epochs, whole-network warm-up epochs ``W``) of a sawtooth
    schedule over ``num_epochs`` epochs, each length a fraction of it (``epochs_for_fraction``).

    The decoder tooth leaves at least one epoch to the whole network (``D <= num_epochs - 1``); its warm-up
    is the first half of it (``D // 2``, as the reference trainer); the whole network's warm-up leaves at
    least one epoch of poly decay (``W <= num_epochs - D - 1``). 0.05 and 0.05: 1000 -> (50, 25, 50),
    40 -> (2, 1, 2), 10 -> (1, 0, 1), 2 -> (1, 0, 0).
    """
    decoder = epochs_for_fraction(decoder_fraction, num_epochs, num_epochs - 1)
    return decoder, decoder // 2, epochs_for_fraction(warmup_fraction, num_epochs, num_epochs - decoder - 1)


def sawtooth_lr(
    step: int, initial_lr: float, max_steps: int, decoder_steps: int, decoder_warmup_steps: int,
    warmup_steps: int, exponent: float = POLY_EXPONENT,
) -> float:
    """Two teeth of ``warmup_poly_lr``, each rising to ``initial_lr`` and decaying to 0 at its end: steps
    ``[0, decoder_steps)`` (the decoder alone; warm-up ``decoder_warmup_steps``), then
    ``[decoder_steps, max_steps)`` (the whole network; warm-up ``warmup_steps``)."""
    if step < decoder_steps:
        return warmup_poly_lr(step, initial_lr, decoder_steps, decoder_warmup_steps, exponent)
    return warmup_poly_lr(step - decoder_steps, initial_lr, max_steps - decoder_steps, warmup_steps, exponent)


class SawtoothLRScheduler(WarmupPolyLRScheduler):
    """``WarmupPolyLRScheduler`` whose rate is ``sawtooth_lr``: a decoder-only tooth of ``decoder_steps``
    epochs, then the whole network's warm-up (``warmup_steps``, counted from ``decoder_steps``) and poly."""

    def __init__(
        self, optimizer: Optimizer, initial_lr: float, max_steps: int, decoder_steps: int,
        decoder_warmup_steps: int, warmup_steps: int, exponent: float = POLY_EXPONENT,
    ) -> None:
        self.decoder_steps = int(decoder_steps)
        self.decoder_warmup_steps = int(decoder_warmup_steps)
        super().__init__(optimizer, initial_lr, max_steps, warmup_steps, exponent)

    def lr_at(self, step: int) -> float:
        return sawtooth_lr(step, self.initial_lr, self.max_steps, self.decoder_steps, self.decoder_warmup_steps,
                           self.warmup_steps, self.exponent)

    def with_optimizer(self, optimizer: Optimizer) -> SawtoothLRScheduler:
        return SawtoothLRScheduler(optimizer, self.initial_lr, self.max_steps, self.decoder_steps,
                                   self.decoder_warmup_steps, self.warmup_steps, self.exponent)
