"""SimCLR's normalized temperature-scaled cross-entropy (NT-Xent) loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class NTXentLoss(nn.Module):
    """NT-Xent (Chen et al., SimCLR, ICML 2020, eq. 1) over the 2B embeddings of B positive pairs.

    Each embedding's positive is the other view of its sample; the other 2B - 2 embeddings of the
    batch are its negatives. The loss is the cross-entropy of picking the positive among the 2B - 1
    others from cosine similarities divided by ``temperature``, averaged over all 2B anchors.

    Shapes:
        z1, z2:  (B, D), the two views' projections (not yet normalized), B >= 1
        returns: scalar; all embeddings equal gives log(2B - 1)
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        b = z1.shape[0]
        z = functional.normalize(torch.cat([z1, z2]).float(), dim=1)
        logits = z @ z.T / self.temperature
        logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
        positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
        return functional.cross_entropy(logits, positives)
