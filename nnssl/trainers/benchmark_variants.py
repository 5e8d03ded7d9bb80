"""Seeded short-schedule trainers for the low-label benchmark (``benchmarks/low_label.py``).

``nnUNetv2_train 502 3d_lowlabel 0 -tr nnSSLTrainer_lowLabel`` with ``nnUNet_n_proc_DA=0``. The arms
share one budget (``LOW_LABEL_EPOCHS`` x ``LOW_LABEL_ITERATIONS`` steps) and each keeps its own defaults
otherwise: ``nnSSLTrainer_lowLabel`` (pretrained encoder) and ``nnSSLTrainer_fullTransfer_lowLabel``
(pretrained encoder and decoder) fine-tune with nnSSLTrainer's schedule (peak 1e-3, 5% warm-up),
``nnUNetTrainer_lowLabel`` (random initialization) with nnU-Net's stock one (1e-2, poly). On top of the
budget each of them

- seeds python, numpy and torch in ``initialize()`` from its ``seed`` attribute (default: the
  environment variable ``nnssl_seed``, else 0); with single-process augmentation (``nnUNet_n_proc_DA=0``)
  the weight initialization, patch sampling and augmentation follow the seed;
- writes the network weights to ``snapshot_epoch_XXXX.pth`` after the epochs in ``snapshot_fractions``
  (25, 50 and 100% of the budget), for Dice-versus-steps curves;
- skips nnU-Net's progress plot and its final validation pass (held-out cases are scored by prediction);
- trains and predicts without mirroring.

The budget, seed and snapshot fractions are attributes: set them on the instance before ``initialize()``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl.trainers.nnssl_trainer import nnSSLTrainer

_CUDA = torch.device("cuda")
SEED_ENV_VAR = "nnssl_seed"
LOW_LABEL_EPOCHS = 16
LOW_LABEL_ITERATIONS = 25
LOW_LABEL_VAL_ITERATIONS = 1
SNAPSHOT_FRACTIONS = (0.25, 0.5, 1.0)
SNAPSHOT_PATTERN = "snapshot_epoch_{:04d}.pth"


def seed_everything(seed: int) -> None:
    """Seeds python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def snapshot_epochs(num_epochs: int, fractions: tuple[float, ...] = SNAPSHOT_FRACTIONS) -> list[int]:
    """Completed-epoch counts at which to snapshot: ``round(f * num_epochs)``, at least 1, sorted, unique."""
    return sorted({max(1, min(num_epochs, round(f * num_epochs))) for f in fractions})


class _LowLabelSchedule:
    """Budget, seeding, weight snapshots, no progress plot, no final validation, no mirroring."""

    snapshot_fractions: tuple[float, ...] = SNAPSHOT_FRACTIONS

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = LOW_LABEL_EPOCHS
        self.num_iterations_per_epoch = LOW_LABEL_ITERATIONS
        self.num_val_iterations_per_epoch = LOW_LABEL_VAL_ITERATIONS
        self.seed = int(os.environ.get(SEED_ENV_VAR, "0"))

    def initialize(self) -> None:
        if not self.was_initialized:
            seed_everything(self.seed)
            self.print_to_log_file(f"seed {self.seed}; snapshots after epochs {self.snapshot_epoch_list()}")
        super().initialize()
        self.logger.plot_progress_png = lambda *args, **kwargs: None  # seconds per epoch on a CPU

    def snapshot_epoch_list(self) -> list[int]:
        """The completed-epoch counts at which weights are written."""
        return snapshot_epochs(self.num_epochs, tuple(self.snapshot_fractions))

    def snapshot_file(self, epochs_done: int) -> str:
        """The weights file written after ``epochs_done`` epochs."""
        return os.path.join(self.output_folder, SNAPSHOT_PATTERN.format(epochs_done))

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # increments current_epoch: it now counts the completed epochs
        if self.local_rank == 0 and self.current_epoch in self.snapshot_epoch_list():
            network = self.network.module if self.is_ddp else self.network
            network = getattr(network, "_orig_mod", network)
            torch.save(network.state_dict(), self.snapshot_file(self.current_epoch))

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("final validation skipped: held-out cases are scored by prediction")

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class nnSSLTrainer_lowLabel(_LowLabelSchedule, nnSSLTrainer):
    """Pretrained encoder, low-label budget, seeded (see the module docstring)."""


class nnSSLTrainer_fullTransfer_lowLabel(_LowLabelSchedule, nnSSLTrainer):
    """Pretrained encoder and decoder, low-label budget, seeded (see the module docstring)."""

    transfer_scope = "full"


class nnUNetTrainer_lowLabel(_LowLabelSchedule, nnUNetTrainer):
    """From scratch with the same budget and seeding as nnSSLTrainer_lowLabel (stock poly schedule)."""
