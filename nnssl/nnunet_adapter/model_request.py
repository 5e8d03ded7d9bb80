"""Which trained model ``nnssl_predict`` is asked for, as ``nnUNetv2_predict`` names it.

Kept apart from ``prediction`` (which imports torch and nnunetv2), so that the command line builds its request and
checks it before the slow imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnssl.checkpoints.layout import FINAL_CHECKPOINT


@dataclass(frozen=True)
class ModelRequest:
    """Which trained model, as ``nnUNetv2_predict`` names it."""

    dataset: str
    configuration: str
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    folds: tuple[str, ...] | None = None  # None: every fold that has the checkpoint
    checkpoint: str = FINAL_CHECKPOINT
