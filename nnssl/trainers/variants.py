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


def _set_budget(trainer: nnUNetTrainer, epochs: int, iterations: int, val_iterations: int) -> None:
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = val_iterations


class nnSSLTrainer_fullTransfer(nnSSLTrainer):
    """Transfers encoder and decoder (never the segmentation head)."""

    transfer_scope = "full"


class nnSSLTrainer_noWarmup(nnSSLTrainer):
    """nnU-Net's plain poly schedule (at nnSSLTrainer's peak learning rate)."""

    warmup_fraction = 0.0


class nnSSLTrainer_100epochs(nnSSLTrainer):
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 100


class nnSSLTrainer_250epochs(nnSSLTrainer):
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 250


class nnSSLTrainer_10epochs_25iters(nnSSLTrainer):
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _set_budget(self, epochs=10, iterations=25, val_iterations=5)


class _NoMirroring:
    """No mirroring in training nor in final validation (nnU-Net's *_NoMirroring convention): keeps smoke
    runs short, since test-time mirroring dominates tiny runs on a CPU."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class nnSSLTrainer_2epochs_5iters_noMirroring(_NoMirroring, nnSSLTrainer):
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _set_budget(self, epochs=2, iterations=5, val_iterations=2)


class nnUNetTrainer_10epochs_25iters(nnUNetTrainer):
    """From-scratch twin of nnSSLTrainer_10epochs_25iters (stock poly schedule)."""

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _set_budget(self, epochs=10, iterations=25, val_iterations=5)


class nnUNetTrainer_2epochs_5iters_noMirroring(_NoMirroring, nnUNetTrainer):
    """From-scratch twin of nnSSLTrainer_2epochs_5iters_noMirroring (stock poly schedule)."""

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _set_budget(self, epochs=2, iterations=5, val_iterations=2)
