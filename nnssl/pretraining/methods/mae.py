"""MAE-style masked image modeling for nnU-Net's CNNs (Wald et al., "Revisiting MAE pre-training for
3D medical image segmentation", CVPR 2025).

Random 3D blocks of the input are set to 0 (the mean of nnU-Net's z-scored intensities); the full
U-Net reconstructs the image through a 1x1x1 reconstruction head that takes the place of the
segmentation head; the loss is the MSE on masked voxels only. The target is the patch normalized by
its own statistics (``target_normalization="patch"``, ``nnssl.pretraining.methods.targets``), so that the
heavy-tailed intensities of light-sheet volumes do not dominate the loss; ``"none"`` is the
published setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnssl.pretraining.methods.base import SSLMethod, SSLModel, StepOutput, register_method
from nnssl.pretraining.methods.losses import MaskedMSELoss
from nnssl.pretraining.methods.masking import MIN_BLOCKS_PER_AXIS, block_size_for_patch, random_block_mask
from nnssl.pretraining.methods.targets import (
    check_target_normalization,
    target_frame,
    to_images,
    to_target,
    visible_mean,
)


@register_method("mae")
class MaskedAutoencoder(SSLMethod):
    """Settings: ``mask_ratio`` 0.75, ``block_size`` 16 voxels per edge, shrunk so each patch axis holds at
    least ``min_blocks_per_axis`` blocks (``masking.block_size_for_patch``), ``target_normalization``
    ``"patch"``."""

    def __init__(
        self,
        patch_size: Sequence[int],
        num_input_channels: int,
        mask_ratio: float = 0.75,
        block_size: int = 16,
        target_normalization: str = "patch",
        min_blocks_per_axis: int = MIN_BLOCKS_PER_AXIS,
    ) -> None:
        super().__init__(patch_size, num_input_channels)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.block_edge = int(block_size)
        self.min_blocks_per_axis = int(min_blocks_per_axis)
        self.block_size = block_size_for_patch(self.patch_size, self.block_edge, self.min_blocks_per_axis)
        self.target_normalization = check_target_normalization(target_normalization)
        self.loss = MaskedMSELoss()

    def settings(self) -> dict[str, Any]:
        return {"mask_ratio": self.mask_ratio, "block_size": self.block_edge,
                "block_size_per_axis": list(self.block_size), "target_normalization": self.target_normalization,
                "min_blocks_per_axis": self.min_blocks_per_axis}

    def mask(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, Z, Y, X) -> masked images (same shape) and the mask (B, 1, Z, Y, X), 1 = hidden."""
        mask = random_block_mask(images.shape[0], images.shape[2:], self.block_size, self.mask_ratio,
                                 generator=generator, device=images.device).to(images.dtype)
        return images * (1 - mask), mask

    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        masked, mask = self.mask(images, generator)
        reconstruction = model.run_network(masked)
        return self.forward_loss(reconstruction, images, masked, mask, validating=not model.training)

    def forward_loss(self, reconstruction: torch.Tensor, images: torch.Tensor, masked: torch.Tensor,
                     mask: torch.Tensor, validating: bool) -> StepOutput:
        """Loss on the hidden voxels; in validation also the trivial answer's loss (each hidden voxel
        predicted as the mean of its patch's visible voxels, in the target's units).

        reconstruction (B, C, Z, Y, X) in the target's units; images, masked (B, C, Z, Y, X); mask
        (B, 1, Z, Y, X), 1 = hidden.
        """
        frame = target_frame(images, mask, self.target_normalization)
        target = to_target(images, frame)
        figures = {}
        if validating:
            figures["trivial"] = self.loss(visible_mean(target, mask).expand_as(target), target, mask)
        preview = {"input": images, "masked": masked, "reconstruction": to_images(reconstruction, frame)}
        return StepOutput(self.loss(reconstruction, target, mask), preview, figures)
