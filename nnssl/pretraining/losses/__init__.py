"""Pretraining losses, one per file, each a plain ``nn.Module``."""

from nnssl.pretraining.losses.masked_mse import MaskedMSELoss

__all__ = ["MaskedMSELoss"]
