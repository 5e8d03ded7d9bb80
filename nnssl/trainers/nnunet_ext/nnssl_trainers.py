"""Shim for nnU-Net's trainer lookup (``nnUNet_extTrainer``; set by ``nnssl._startup`` at start-up).

nnU-Net imports every ``.py`` file of this folder as a TOP-LEVEL module (this folder on ``sys.path``),
so this file holds only absolute re-exports: the classes stay ``nnssl.trainers.*`` classes, imported
once, and ``issubclass(..., nnUNetTrainer)`` holds. The folder has no ``__init__.py`` on purpose: it is
not a package and nothing should import it as ``nnssl.trainers.nnunet_ext``.
"""

from nnssl.trainers.benchmark_variants import (
    nnSSLTrainer_fullTransfer_lowLabel,
    nnSSLTrainer_lowLabel,
    nnUNetTrainer_lowLabel,
)
from nnssl.trainers.finetune_variants import (
    nnSSLTrainer_frozenEncoder,
    nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring,
    nnSSLTrainer_layerwiseLRDecay,
    nnSSLTrainer_layerwiseLRDecay_2epochs_5iters_noMirroring,
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
    "nnSSLTrainer_frozenEncoder",
    "nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring",
    "nnSSLTrainer_fullTransfer",
    "nnSSLTrainer_fullTransfer_lowLabel",
    "nnSSLTrainer_layerwiseLRDecay",
    "nnSSLTrainer_layerwiseLRDecay_2epochs_5iters_noMirroring",
    "nnSSLTrainer_lowLabel",
    "nnSSLTrainer_noWarmup",
    "nnUNetTrainer_2epochs_5iters_noMirroring",
    "nnUNetTrainer_10epochs_25iters",
    "nnUNetTrainer_lowLabel",
]
