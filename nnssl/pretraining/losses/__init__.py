"""Pretraining losses, one per file, each a plain ``nn.Module``."""

from nnssl.pretraining.losses.byol import BYOLLoss
from nnssl.pretraining.losses.masked_mse import MaskedMSELoss
from nnssl.pretraining.losses.nt_xent import NTXentLoss

__all__ = ["BYOLLoss", "MaskedMSELoss", "NTXentLoss"]
