"""Trainer variants, named the nnU-Net way (the class name records the setting).

``nnUNetv2_train DATASET 3d_fullres 0 -tr nnSSLTrainer_fullTransfer``. The short ``*_Nepochs_Kiters``
schedules are for CPU demos and tests; each nnSSL one has a from-scratch ``nnUNetTrainer_*`` twin with the
same budget (epochs, iterations, validation iterations) for comparisons. The nnSSL variants fine-tune at
nnSSLTrainer's peak learning rate (1e-3) and warm up over ``warmup_fraction`` (5%) of their epochs; the
from-scratch twins keep nnU-Net's stock schedule (1e-2, poly, no warm-up).
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl.trainers.nnssl_trainer import nnSSLTrainer

_CUDA = torch.device("cuda")


class TrainingBudget:
    """Mixin, listed before the trainer class: after nnU-Net's ``__init__`` sets the budget from
    ``budget_epochs``, ``budget_iterations`` and ``budget_val_iterations`` (None keeps nnU-Net's value).

    The ``__init__`` keeps nnU-Net's signature: nnU-Net records its arguments by name in checkpoints.
    """

    budget_epochs: int | None = None
    budget_iterations: int | None = None
    budget_val_iterations: int | None = None

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for attribute, value in (("num_epochs", self.budget_epochs),
                                 ("num_iterations_per_epoch", self.budget_iterations),
                                 ("num_val_iterations_per_epoch", self.budget_val_iterations)):
            if value is not None:
                setattr(self, attribute, value)


class NoMirroring:
    """No mirroring in training nor in final validation (nnU-Net's *_NoMirroring convention): keeps smoke
    runs short, since test-time mirroring dominates tiny runs on a CPU."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class nnSSLTrainer_fullTransfer(nnSSLTrainer):
    """Transfers encoder and decoder (never the segmentation head)."""

    transfer_scope = "full"


class nnSSLTrainer_noWarmup(nnSSLTrainer):
    """nnU-Net's plain poly schedule (at nnSSLTrainer's peak learning rate)."""

    warmup_fraction = 0.0


class nnSSLTrainer_100epochs(TrainingBudget, nnSSLTrainer):
    budget_epochs = 100


class nnSSLTrainer_250epochs(TrainingBudget, nnSSLTrainer):
    budget_epochs = 250


class nnSSLTrainer_10epochs_25iters(TrainingBudget, nnSSLTrainer):
    budget_epochs, budget_iterations, budget_val_iterations = 10, 25, 5


class nnSSLTrainer_2epochs_5iters_noMirroring(TrainingBudget, NoMirroring, nnSSLTrainer):
    budget_epochs, budget_iterations, budget_val_iterations = 2, 5, 2


class nnUNetTrainer_10epochs_25iters(TrainingBudget, nnUNetTrainer):
    """From-scratch twin of nnSSLTrainer_10epochs_25iters (stock poly schedule)."""

    budget_epochs, budget_iterations, budget_val_iterations = 10, 25, 5


class nnUNetTrainer_2epochs_5iters_noMirroring(TrainingBudget, NoMirroring, nnUNetTrainer):
    """From-scratch twin of nnSSLTrainer_2epochs_5iters_noMirroring (stock poly schedule)."""

    budget_epochs, budget_iterations, budget_val_iterations = 2, 5, 2
