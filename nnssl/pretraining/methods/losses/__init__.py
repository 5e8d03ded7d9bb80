"""Pretraining losses, one per file, each a plain ``nn.Module``."""

from nnssl.pretraining.methods.losses.byol import BYOLLoss
from nnssl.pretraining.methods.losses.masked_mse import MaskedMSELoss
from nnssl.pretraining.methods.losses.nt_xent import NTXentLoss

__all__ = ["BYOLLoss", "MaskedMSELoss", "NTXentLoss"]
