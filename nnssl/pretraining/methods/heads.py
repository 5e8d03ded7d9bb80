"""Small modules that two-view methods put on top of the encoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


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


def pair_similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """How a two-view method separates its pairs: the mean cosine similarity of each sample's two
    embeddings (``positive_similarity``) and of embeddings of different samples
    (``negative_similarity``; NaN for a batch of one). A method that learns keeps the first clearly
    above the second; equal values mean the embeddings carry nothing of the sample (collapse).

    Shapes: a, b (B, D) -> two scalars.
    """
    similarity = functional.normalize(a.float(), dim=1) @ functional.normalize(b.float(), dim=1).T
    n = similarity.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)
    negative = similarity[off_diagonal].mean() if n > 1 else similarity.new_tensor(float("nan"))
    return {"positive_similarity": similarity.diagonal().mean(), "negative_similarity": negative}
