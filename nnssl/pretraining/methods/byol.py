"""BYOL: non-contrastive learning with a momentum target network (Grill et al., "Bootstrap Your Own
Latent", NeurIPS 2020).

The online branch (nnU-Net's encoder, a projector and a predictor) predicts the target branch's
projection of the other view. The target branch (encoder + projector) is an exponential moving
average of the online one, with momentum rising from ``base_momentum`` to 1 on a cosine schedule
over the whole run. No negatives are needed, so small batches work. Only the encoder learns; the
target copy is saved in the checkpoint (``method_state``) so ``--continue`` resumes it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnssl.nnunet_adapter.network_parts import encode, encoder_channels, encoder_of, run_encoder
from nnssl.pretraining.methods.base import SSLMethod, SSLModel, StepOutput, register_method
from nnssl.pretraining.methods.heads import GlobalPool, mlp, pair_similarities
from nnssl.pretraining.methods.losses import BYOLLoss
from nnssl.pretraining.methods.views import check_crop_fraction, two_views


def momentum_at(progress: float, base_momentum: float) -> float:
    """BYOL's schedule: tau = 1 - (1 - tau_base) (cos(pi progress) + 1) / 2, progress in [0, 1]."""
    return 1 - (1 - base_momentum) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


@register_method("byol")
class BYOL(SSLMethod):
    """Settings (paper defaults): ``base_momentum`` 0.996, ``projection_dim`` 256, ``hidden_dim`` 4096,
    ``crop_fraction`` 0.75 of the patch per axis."""

    trains_decoder = False

    def __init__(self, patch_size: Sequence[int], num_input_channels: int, base_momentum: float = 0.996,
                 projection_dim: int = 256, hidden_dim: int = 4096, crop_fraction: float = 0.75) -> None:
        super().__init__(patch_size, num_input_channels)
        if not 0.0 <= base_momentum < 1.0:
            raise ValueError(f"base_momentum must be in [0, 1), got {base_momentum}")
        self.base_momentum, self.crop_fraction = float(base_momentum), check_crop_fraction(crop_fraction)
        self.projection_dim, self.hidden_dim = int(projection_dim), int(hidden_dim)
        self.loss = BYOLLoss()

    def settings(self) -> dict[str, Any]:
        return {"base_momentum": self.base_momentum, "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim, "crop_fraction": self.crop_fraction}

    def build_heads(self, network: nn.Module) -> nn.ModuleDict:
        width = encoder_channels(network)[-1]
        projector = nn.Sequential(GlobalPool(), mlp(width, self.hidden_dim, self.projection_dim))
        heads = nn.ModuleDict({
            "projector": projector,
            "predictor": mlp(self.projection_dim, self.hidden_dim, self.projection_dim),
            "target_encoder": copy.deepcopy(encoder_of(network)),
            "target_projector": copy.deepcopy(projector),
        })
        heads["target_encoder"].requires_grad_(False)
        heads["target_projector"].requires_grad_(False)
        return heads

    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        view1, view2 = two_views(images, self.crop_fraction, generator)
        views, heads = torch.cat([view1, view2]), model.heads
        online = heads["projector"](encode(model.network, views)[-1])
        p1, p2 = heads["predictor"](online).chunk(2)
        with torch.no_grad():
            z1, z2 = heads["target_projector"](run_encoder(heads["target_encoder"], views)[-1]).chunk(2)
        figures = {} if model.training else pair_similarities(p1, z2)  # prediction of view 1 vs target of view 2
        return StepOutput(self.loss(p1, p2, z1, z2), {"input": images, "view 1": view1, "view 2": view2}, figures)

    @torch.no_grad()
    def after_optimizer_step(self, model: SSLModel, progress: float) -> None:
        tau = momentum_at(progress, self.base_momentum)
        heads = model.heads
        for online, target in ((encoder_of(model.network), heads["target_encoder"]),
                               (heads["projector"], heads["target_projector"])):
            for p_online, p_target in zip(online.parameters(), target.parameters()):
                p_target.lerp_(p_online.detach(), 1 - tau)
            for b_online, b_target in zip(online.buffers(), target.buffers()):
                b_target.copy_(b_online)
