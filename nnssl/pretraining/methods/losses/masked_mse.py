"""Mean squared reconstruction error over masked voxels (MAE's loss)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedMSELoss(nn.Module):
    """MSE between reconstruction and target, averaged over masked voxels and channels only.

    Visible voxels carry no loss: the network could copy them. Intensities are in nnU-Net's
    normalized space (the preprocessed data), so the loss scale does not depend on the microscope.

    Shapes:
        prediction: (B, C, Z, Y, X)
        target:     (B, C, Z, Y, X)
        mask:       (B, 1, Z, Y, X), 1 = masked
        returns:    scalar
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        squared_error = (prediction.float() - target.float()) ** 2
        masked_sum = (squared_error * mask).sum()
        count = mask.sum() * prediction.shape[1]
        return masked_sum / (count + self.eps)
