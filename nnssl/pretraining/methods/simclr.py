"""SimCLR: contrastive learning of the encoder (Chen et al., "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020).

Two augmented, overlapping crops of every patch go through nnU-Net's encoder; the deepest feature
map is averaged over space and mapped by an MLP projection head; NT-Xent pulls the two views of a
patch together and pushes the other patches of the batch away. Only the encoder learns (the decoder
stays at its initialization), so fine-tuning transfers the encoder. Negatives come from the local
batch (per process under DDP): larger batches give more negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnssl.nnunet_adapter.network_parts import encode, encoder_channels
from nnssl.pretraining.methods.base import SSLMethod, SSLModel, StepOutput, register_method
from nnssl.pretraining.methods.heads import GlobalPool, mlp, pair_similarities
from nnssl.pretraining.methods.losses import NTXentLoss
from nnssl.pretraining.methods.views import check_crop_fraction, two_views


@register_method("simclr")
class SimCLR(SSLMethod):
    """Settings (paper defaults): ``temperature`` 0.1, ``projection_dim`` 128, projection hidden width =
    the encoder's deepest width (``hidden_dim`` 0), ``crop_fraction`` 0.75 of the patch per axis."""

    trains_decoder = False

    def __init__(self, patch_size: Sequence[int], num_input_channels: int, temperature: float = 0.1,
                 projection_dim: int = 128, hidden_dim: int = 0, crop_fraction: float = 0.75) -> None:
        super().__init__(patch_size, num_input_channels)
        self.temperature, self.crop_fraction = float(temperature), check_crop_fraction(crop_fraction)
        self.projection_dim, self.hidden_dim = int(projection_dim), int(hidden_dim)
        self.loss = NTXentLoss(self.temperature)

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim, "crop_fraction": self.crop_fraction}

    def build_heads(self, network: nn.Module) -> nn.ModuleDict:
        width = encoder_channels(network)[-1]
        return nn.ModuleDict({"projector": nn.Sequential(
            GlobalPool(), mlp(width, self.hidden_dim or width, self.projection_dim))})

    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        view1, view2 = two_views(images, self.crop_fraction, generator)
        # both views in one encoder pass: one batch for the projector's batch norm, half the calls
        deepest = encode(model.network, torch.cat([view1, view2]))[-1]
        z1, z2 = model.heads["projector"](deepest).chunk(2)
        figures = {} if model.training else pair_similarities(z1, z2)
        return StepOutput(self.loss(z1, z2), {"input": images, "view 1": view1, "view 2": view2}, figures)
