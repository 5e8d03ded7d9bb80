"""Models Genesis: learn to restore an image from a corrupted copy (Zhou et al., "Models Genesis",
MICCAI 2019 / MedIA 2021), through the full U-Net.

Each patch is corrupted on the device, the way the paper's ``generate_pair`` does it, with its
probabilities: local voxel shuffling (p 0.5), a monotonic non-linear intensity transform from a random
Bézier curve (p 0.9), then in-painting (p 0.9 x 0.2: up to 5 boxes of noise) or out-painting (p 0.9 x
0.8: noise everywhere except up to 5 boxes). The transforms work on intensities rescaled to [0, 1] per
patch (the paper's range), and the result is mapped back to nnU-Net's normalized range. The network
restores the original patch; the loss is the MSE over all voxels, on the patch normalized by its own mean
and spread (``target_normalization="patch"``, ``nnssl.pretraining.methods.targets``; ``"none"``: the paper's
intensities). The paper's flips are left out: nnU-Net's augmentation already mirrors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnssl.pretraining.methods.base import SSLMethod, SSLModel, StepOutput, register_method
from nnssl.pretraining.methods.genesis_corruptions import bezier_intensity_map, in_paint, local_shuffle, out_paint
from nnssl.pretraining.methods.losses import MaskedMSELoss
from nnssl.pretraining.methods.targets import (
    check_target_normalization,
    target_frame,
    to_images,
    to_target,
    visible_mean,
)


@register_method("modelsgenesis")
class ModelsGenesis(SSLMethod):
    """Settings (the paper's defaults): ``local_rate`` 0.5, ``nonlinear_rate`` 0.9, ``paint_rate`` 0.9,
    ``outpaint_rate`` 0.8 (of painting), ``shuffle_blocks`` 10000 (local shuffling boxes per patch, each
    up to 1/10 of the patch per axis); ``target_normalization`` ``"patch"``."""

    def __init__(self, patch_size: Sequence[int], num_input_channels: int, local_rate: float = 0.5,
                 nonlinear_rate: float = 0.9, paint_rate: float = 0.9, outpaint_rate: float = 0.8,
                 shuffle_blocks: int = 10000, target_normalization: str = "patch") -> None:
        super().__init__(patch_size, num_input_channels)
        rates = {"local_rate": local_rate, "nonlinear_rate": nonlinear_rate, "paint_rate": paint_rate,
                 "outpaint_rate": outpaint_rate}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.rates = {k: float(v) for k, v in rates.items()}
        self.shuffle_blocks = int(shuffle_blocks)
        self.target_normalization = check_target_normalization(target_normalization)
        self.loss = MaskedMSELoss()

    def settings(self) -> dict[str, Any]:
        return {**self.rates, "shuffle_blocks": self.shuffle_blocks, "target_normalization": self.target_normalization}

    def corrupt(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One patch (C, Z, Y, X) in [0, 1] -> its corrupted copy, same shape."""
        def happens(rate: float) -> bool:
            return bool(torch.rand((), generator=generator) < rate)

        if happens(self.rates["local_rate"]):
            image = local_shuffle(image, self.shuffle_blocks, generator)
        if happens(self.rates["nonlinear_rate"]):
            image = bezier_intensity_map(image, generator)
        if happens(self.rates["paint_rate"]):
            image = out_paint(image, generator) if happens(self.rates["outpaint_rate"]) else in_paint(image, generator)
        return image

    def trivial_loss(self, corrupted: torch.Tensor, target: torch.Tensor, frame: tuple[torch.Tensor, torch.Tensor],
                     everywhere: torch.Tensor) -> torch.Tensor:
        """The better of the two trivial answers of a restoration, in the target's units: the corrupted input
        handed back unchanged, or every voxel at its patch's mean (out-painting noise spans the patch's
        whole range, so copying alone would be an easy bar). Shapes: (B, C, Z, Y, X); mask (B, 1, Z, Y, X)."""
        copy = self.loss(to_target(corrupted, frame), target, everywhere)
        mean = self.loss(visible_mean(target, 1 - everywhere).expand_as(target), target, everywhere)
        return torch.minimum(copy, mean)

    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        dims = (1, 2, 3, 4)
        low, high = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
        scale = (high - low).clamp_min(1e-6)
        unit = (images - low) / scale
        corrupted = torch.stack([self.corrupt(sample, generator) for sample in unit]) * scale + low
        restored = model.run_network(corrupted)
        everywhere = torch.ones_like(images[:, :1])
        frame = target_frame(images, 1 - everywhere, self.target_normalization)
        target = to_target(images, frame)
        figures = {} if model.training else {"trivial": self.trivial_loss(corrupted, target, frame, everywhere)}
        preview = {"input": images, "corrupted": corrupted, "restored": to_images(restored, frame)}
        return StepOutput(self.loss(restored, target, everywhere), preview, figures)
