"""nnSSLTrainer: nnU-Net's trainer that starts a fresh training from nnssl's pretrained weights.

Use it with stock nnU-Net: ``nnUNetv2_train DATASET 3d_fullres 0 -tr nnSSLTrainer``. It only extends
nnU-Net's hooks (``initialize``, ``load_checkpoint``, ``configure_optimizers``, ``on_train_start``):

- fresh training: after nnU-Net built the network (and maybe wrapped it with torch.compile / DDP), the
  checkpoint found by ``find_pretrained_checkpoint`` is loaded and its ``transfer_scope`` tensors are
  copied in (a 1-channel input projection is adapted to the dataset's channels); a report listing the
  stem and encoder tensors goes to the training log. nnssl's checkpoints and checkpoints in the nnU-Net
  SSL format (``network_weights`` + ``nnssl_adaptation_plan``, docs/checkpoints.md) both work;
- ``--c`` / ``--val``: the weights come from nnU-Net's own checkpoint, no transfer;
- the peak learning rate is ``FINE_TUNING_INITIAL_LR`` (1e-3, as nnU-Net's own SSL fine-tuning,
  ``PretrainedTrainer``; nnU-Net's 1e-2 is for training from scratch). It warms up linearly over
  ``warmup_fraction`` (5%) of ``num_epochs``, then decays like nnU-Net's poly schedule. The warm-up length
  is computed in ``configure_optimizers``, which nnU-Net calls in ``initialize()``, so a subclass that
  sets ``self.num_epochs`` in ``__init__`` gets a warm-up that fits its budget.
"""

from __future__ import annotations

import sys

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl.checkpoints.files import load_checkpoint as load_nnssl_checkpoint
from nnssl.checkpoints.lookup import find_pretrained_checkpoint
from nnssl.errors import NnsslError
from nnssl.trainers.lr_schedule import (
    FINE_TUNING_INITIAL_LR,
    WARMUP_FRACTION,
    WarmupPolyLRScheduler,
    warmup_epochs_for,
)
from nnssl.trainers.weight_transfer import checkpoint_weights_for, transfer_weights

STOCK_PRETRAINED_FLAG = "-pretrained_weights"
PRETRAINED_FLAG_MESSAGE = (
    "nnSSLTrainer loads nnssl's pretrained weights itself; drop -pretrained_weights, "
    "or use -tr nnUNetTrainer with -pretrained_weights"
)


def stock_pretrained_flag_given(argv: list[str]) -> bool:
    """True when ``argv`` holds nnU-Net's ``-pretrained_weights`` (also as ``-x=value`` or abbreviated)."""
    for arg in argv[1:]:
        option = arg.split("=", 1)[0]
        # argparse accepts unambiguous prefixes; '-pr' is the shortest that only -pretrained_weights has.
        if len(option) >= 3 and STOCK_PRETRAINED_FLAG.startswith(option):
            return True
    return False


class nnSSLTrainer(nnUNetTrainer):
    """nnUNetTrainer that fine-tunes from nnssl's pretrained checkpoint (encoder by default).

    Schedule: ``initial_lr`` (``FINE_TUNING_INITIAL_LR``, 1e-3) reached after a linear warm-up of
    ``warmup_epochs`` = ``warmup_fraction`` x ``num_epochs`` epochs (rounded half up, at least 1 when the
    fraction is > 0, at most ``num_epochs - 1``), then nnU-Net's poly decay. Variants set
    ``warmup_fraction`` (class attribute) and ``num_epochs`` (in ``__init__``), never a number of warm-up
    epochs.
    """

    transfer_scope: str = "encoder"
    warmup_fraction: float = WARMUP_FRACTION

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's exact signature)
    ):
        # nnU-Net pops this key in super().__init__; --c means the weights come from its checkpoint.
        self.continue_training = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.scratch_lr = self.initial_lr  # nnU-Net's from-scratch rate (1e-2), for the randomly initialised parts
        self.initial_lr = FINE_TUNING_INITIAL_LR  # the weights are always pretrained
        self.checkpoint_was_loaded = False
        self.pretrained_checkpoint: str | None = None

    def initialize(self) -> None:
        if stock_pretrained_flag_given(sys.argv):
            raise SystemExit(PRETRAINED_FLAG_MESSAGE)
        super().initialize()
        # --c calls load_checkpoint (-> initialize) first; a --c that finds no checkpoint starts fresh,
        # which on_train_start catches.
        if not self.continue_training and not self.checkpoint_was_loaded:
            self._load_pretrained_weights()

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        # Marked before super(): super() calls initialize(), which must then skip the transfer.
        self.checkpoint_was_loaded = True
        super().load_checkpoint(filename_or_checkpoint)

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.checkpoint_was_loaded and self.pretrained_checkpoint is None:
            # nnU-Net's --c found no checkpoint to continue from and starts a new training.
            self.print_to_log_file(
                "nnSSLTrainer: no checkpoint to continue from; starting from pretrained weights"
            )
            self._load_pretrained_weights()

    @property
    def warmup_epochs(self) -> int:
        """Warm-up epochs for the current ``num_epochs``: ``warmup_epochs_for(num_epochs, warmup_fraction)``."""
        return warmup_epochs_for(self.num_epochs, self.warmup_fraction)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
        optimizer, _ = super().configure_optimizers()
        # Only the scheduler changes: warm-up protects pretrained features from the full initial_lr.
        # Built here, not in __init__: nnU-Net calls this in initialize(), after any subclass __init__.
        lr_scheduler = self.build_lr_scheduler(optimizer)
        self.print_to_log_file(self.lr_schedule_description(lr_scheduler))
        return optimizer, lr_scheduler

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> WarmupPolyLRScheduler:
        """The schedule over ``optimizer``: warm-up over ``warmup_epochs``, then poly (variants with another
        shape of schedule override this and ``lr_schedule_description``)."""
        return WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)

    def lr_schedule_description(self, lr_scheduler: WarmupPolyLRScheduler) -> str:
        """The training log's line about the schedule."""
        epochs, warmup = self.num_epochs, lr_scheduler.warmup_steps
        return (
            f"nnSSLTrainer: linear learning-rate warm-up over {warmup} epochs (warmup_fraction "
            f"{self.warmup_fraction:g} of {epochs} epochs) to the peak "
            f"{self.initial_lr:g} at epoch {warmup}, then poly decay (exponent {lr_scheduler.exponent:g}) to "
            f"{lr_scheduler.lr_at(epochs - 1):.3g} at the last epoch {epochs - 1} (0 at epoch {epochs})"
        )

    def _load_pretrained_weights(self) -> None:
        """Finds, loads and transfers the pretrained weights; an NnsslError ends the run with its message."""
        try:
            found = find_pretrained_checkpoint(self.plans_manager.plans, self.configuration_name)
            checkpoint = load_nnssl_checkpoint(found.path)
            try:
                weights, in_proj_keys = checkpoint_weights_for(self.network, checkpoint)
                report = transfer_weights(self.network, weights, self.transfer_scope, in_proj_keys=in_proj_keys)
            except NnsslError as e:
                raise NnsslError(f"{found.path}: {e}") from e
        except NnsslError as e:
            raise SystemExit(str(e)) from e
        self.pretrained_checkpoint = found.path
        self.print_to_log_file(f"nnSSLTrainer: pretrained weights from {found.path} ({found.source})")
        self.print_to_log_file(report.format())
