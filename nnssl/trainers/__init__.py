"""nnU-Net trainers that fine-tune from nnssl's pretrained weights (``-tr nnSSLTrainer``).

``__all__`` is the one list of nnssl's trainers: the shim folder nnU-Net scans (``nnunet_ext/``) re-exports it.
"""

from nnssl.trainers.finetune_variants import (
    nnSSLTrainer_discriminativeLR,
    nnSSLTrainer_discriminativeLR_2epochs_5iters_noMirroring,
    nnSSLTrainer_frozenEncoder,
    nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring,
    nnSSLTrainer_layerwiseLRDecay,
    nnSSLTrainer_layerwiseLRDecay_2epochs_5iters_noMirroring,
    nnSSLTrainer_sawtooth,
    nnSSLTrainer_sawtooth_2epochs_5iters_noMirroring,
)
from nnssl.trainers.nnssl_trainer import nnSSLTrainer
from nnssl.trainers.variants import (
    nnSSLTrainer_2epochs_5iters_noMirroring,
    nnSSLTrainer_10epochs_25iters,
    nnSSLTrainer_100epochs,
    nnSSLTrainer_250epochs,
    nnSSLTrainer_fullTransfer,
    nnSSLTrainer_noWarmup,
    nnUNetTrainer_2epochs_5iters_noMirroring,
    nnUNetTrainer_10epochs_25iters,
)

__all__ = [
    "nnSSLTrainer",
    "nnSSLTrainer_2epochs_5iters_noMirroring",
    "nnSSLTrainer_10epochs_25iters",
    "nnSSLTrainer_100epochs",
    "nnSSLTrainer_250epochs",
    "nnSSLTrainer_discriminativeLR",
    "nnSSLTrainer_discriminativeLR_2epochs_5iters_noMirroring",
    "nnSSLTrainer_frozenEncoder",
    "nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring",
    "nnSSLTrainer_fullTransfer",
    "nnSSLTrainer_layerwiseLRDecay",
    "nnSSLTrainer_layerwiseLRDecay_2epochs_5iters_noMirroring",
    "nnSSLTrainer_noWarmup",
    "nnSSLTrainer_sawtooth",
    "nnSSLTrainer_sawtooth_2epochs_5iters_noMirroring",
    "nnUNetTrainer_2epochs_5iters_noMirroring",
    "nnUNetTrainer_10epochs_25iters",
]
