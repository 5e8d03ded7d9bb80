"""BYOL's regression loss between the online prediction and the target projection."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class BYOLLoss(nn.Module):
    """Symmetrized BYOL loss (Grill et al., NeurIPS 2020, eq. 2 and 3).

    For each sample: ||p̄1 - z̄2||² + ||p̄2 - z̄1||², with x̄ = x / ||x||, which equals
    (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)); averaged over the batch. The targets carry no gradient.

    Shapes:
        p1, p2:  (B, D), online predictions of view 1 and view 2
        z1, z2:  (B, D), target projections of view 1 and view 2
        returns: scalar in [0, 8]; 0 when every prediction points along its target
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        def regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return 2 - 2 * functional.cosine_similarity(p.float(), z.detach().float(), dim=1)

        return (regression(p1, z2) + regression(p2, z1)).mean()
