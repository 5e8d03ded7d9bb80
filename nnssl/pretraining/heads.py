"""Small modules that two-view methods put on top of the encoder."""

from __future__ import annotations

import torch
from torch import nn


class GlobalPool(nn.Module):
    """Mean over space: (B, C, Z, Y, X) -> (B, C)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3, 4))


def mlp(in_features: int, hidden_features: int, out_features: int) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU -> Linear: SimCLR's projection head and BYOL's projector/predictor.

    (N, in_features) -> (N, out_features); batch norm needs N >= 2 in training (two views make it so).
    """
    return nn.Sequential(nn.Linear(in_features, hidden_features), nn.BatchNorm1d(hidden_features),
                         nn.ReLU(inplace=True), nn.Linear(hidden_features, out_features))
