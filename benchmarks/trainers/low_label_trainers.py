"""Seeded short-schedule trainers for the low-label benchmark (``benchmarks/low_label.py``).

Not part of the nnssl package: ``low_label.py`` imports this module from its folder and appends the folder
to ``nnUNet_extTrainer``, so that ``nnUNetv2_train 502 3d_lowlabel 0 -tr nnSSLTrainer_lowLabel`` (with
``nnUNet_n_proc_DA=0``) finds the trainers too (nnU-Net imports every ``.py`` file of such a folder). The arms
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

The budget, seed, snapshot fractions and each recipe's settings (``initial_lr``, ``encoder_lr``,
``decoder_fraction``, ...) are attributes: set them on the instance before ``initialize()``.
"""

from __future__ import annotations

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl.pretraining.engine.random_state import seed_everything
from nnssl.trainers import (
    nnSSLTrainer,
    nnSSLTrainer_discriminativeLR,
    nnSSLTrainer_frozenEncoder,
    nnSSLTrainer_layerwiseLRDecay,
    nnSSLTrainer_sawtooth,
)
from nnssl.trainers.variants import NoMirroring, TrainingBudget

_CUDA = torch.device("cuda")
SEED_ENV_VAR = "nnssl_seed"
LOW_LABEL_EPOCHS = 16
LOW_LABEL_ITERATIONS = 25
LOW_LABEL_VAL_ITERATIONS = 1
SNAPSHOT_FRACTIONS = (0.25, 0.5, 1.0)
SNAPSHOT_PATTERN = "snapshot_epoch_{:04d}.pth"


def snapshot_epochs(num_epochs: int, fractions: tuple[float, ...] = SNAPSHOT_FRACTIONS) -> list[int]:
    """Completed-epoch counts at which to snapshot: ``round(f * num_epochs)``, at least 1, sorted, unique."""
    return sorted({max(1, min(num_epochs, round(f * num_epochs))) for f in fractions})


class _LowLabelSchedule(TrainingBudget, NoMirroring):
    """Budget, seeding, weight snapshots, no progress plot, no final validation, no mirroring."""

    budget_epochs, budget_iterations, budget_val_iterations = (LOW_LABEL_EPOCHS, LOW_LABEL_ITERATIONS,
                                                               LOW_LABEL_VAL_ITERATIONS)
    snapshot_fractions: tuple[float, ...] = SNAPSHOT_FRACTIONS

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
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


class nnSSLTrainer_lowLabel(_LowLabelSchedule, nnSSLTrainer):
    """Pretrained encoder, low-label budget, seeded (see the module docstring)."""


class nnSSLTrainer_fullTransfer_lowLabel(_LowLabelSchedule, nnSSLTrainer):
    """Pretrained encoder and decoder, low-label budget, seeded (see the module docstring)."""

    transfer_scope = "full"


class nnSSLTrainer_sawtooth_lowLabel(_LowLabelSchedule, nnSSLTrainer_sawtooth):
    """Sawtooth (decoder alone, then the whole network), low-label budget, seeded."""


class nnSSLTrainer_discriminativeLR_lowLabel(_LowLabelSchedule, nnSSLTrainer_discriminativeLR):
    """Decoder at the from-scratch rate, encoder lower, low-label budget, seeded."""


class nnSSLTrainer_frozenEncoder_lowLabel(_LowLabelSchedule, nnSSLTrainer_frozenEncoder):
    """Encoder frozen first, low-label budget, seeded."""


class nnSSLTrainer_layerwiseLRDecay_lowLabel(_LowLabelSchedule, nnSSLTrainer_layerwiseLRDecay):
    """Layer-wise learning-rate decay, low-label budget, seeded."""


class nnUNetTrainer_lowLabel(_LowLabelSchedule, nnUNetTrainer):
    """From scratch with the same budget and seeding as nnSSLTrainer_lowLabel (stock poly schedule)."""
