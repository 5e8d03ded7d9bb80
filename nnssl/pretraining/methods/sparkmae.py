"""Sparse masked modeling for CNNs, in the style of SparK (Tian et al., ICLR 2023) and its 3D form
S3D (Wald et al., "Revisiting MAE pre-training for 3D medical image segmentation", CVPR 2025).

Random 3D blocks are hidden as in ``mae``, but hidden positions stay empty through the whole encoder,
as in a sparse convolutional network: the input is masked, and every normalization layer of the
encoder computes its statistics over visible positions only and writes 0 at hidden ones (at every
resolution, with the mask max-pooled to it). Before decoding, a learned mask token per stage fills
the hidden positions of each skip; the decoder reconstructs the image, and the loss is the MSE on
hidden voxels. Unlike dense masking, the encoder never sees the artificial zeros of hidden blocks,
so its statistics match those of unmasked fine-tuning images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional

from nnssl.nnunet_adapter.network_parts import (
    decode,
    encode,
    encoder_channels,
    encoder_norm_layers,
    normalized_over_visible,
)
from nnssl.pretraining.methods.base import SSLModel, StepOutput, register_method
from nnssl.pretraining.methods.mae import MaskedAutoencoder
from nnssl.pretraining.methods.masking import MIN_BLOCKS_PER_AXIS


def visible_at(visible: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The visibility mask (B, 1, Z, Y, X) at a coarser feature-map ``shape``: a position is visible
    if any voxel it covers is (max pooling), so no visible input is dropped."""
    if tuple(visible.shape[2:]) == tuple(shape):
        return visible
    return functional.adaptive_max_pool3d(visible, tuple(shape))


class _SparseEncoding:
    """Context in which the encoder's normalization layers normalize over visible positions only.

    Each layer's ``forward`` is replaced on the instance for the duration (not wrapped by a hook, which
    would compute the dense normalization too and throw it away); the weights stay the network's own.
    """

    def __init__(self, network: nn.Module, visible: torch.Tensor) -> None:
        self.network, self.visible, self.norms = network, visible, []
        self._by_shape: dict[tuple, torch.Tensor] = {}

    def visible_for(self, shape: Sequence[int]) -> torch.Tensor:
        key = tuple(shape)
        if key not in self._by_shape:
            self._by_shape[key] = visible_at(self.visible, key)
        return self._by_shape[key]

    def _sparse_forward(self, norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(features: torch.Tensor) -> torch.Tensor:
            return normalized_over_visible(norm, features, self.visible_for(features.shape[2:]).to(features.dtype))

        return forward

    def __enter__(self) -> _SparseEncoding:
        self.norms = encoder_norm_layers(self.network)
        for norm in self.norms:
            norm.forward = self._sparse_forward(norm)
        return self

    def __exit__(self, *exc: object) -> None:
        for norm in self.norms:
            del norm.forward  # the class's forward again


@register_method("sparkmae")
class SparkMAE(MaskedAutoencoder):
    """Settings: ``mask_ratio`` 0.6 (SparK's default), ``block_size`` 16 voxels per edge, shrunk so a
    patch axis holds at least ``min_blocks_per_axis`` blocks, and ``target_normalization`` (the masking and
    target of ``mae``)."""

    def __init__(self, patch_size: Sequence[int], num_input_channels: int, mask_ratio: float = 0.6,
                 block_size: int = 16, target_normalization: str = "patch",
                 min_blocks_per_axis: int = MIN_BLOCKS_PER_AXIS) -> None:
        super().__init__(patch_size, num_input_channels, mask_ratio, block_size, target_normalization,
                         min_blocks_per_axis)

    def build_heads(self, network: nn.Module) -> nn.ModuleDict:
        """One learned mask token per encoder stage, (1, C_s, 1, 1, 1), initialized like SparK's (std 0.02)."""
        tokens = nn.ParameterList(nn.Parameter(0.02 * torch.randn(1, c, 1, 1, 1)) for c in encoder_channels(network))
        return nn.ModuleDict({"mask_tokens": tokens})

    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        masked, mask = self.mask(images, generator)
        with _SparseEncoding(model.network, 1 - mask) as sparse:
            skips = encode(model.network, masked)
        tokens = model.heads["mask_tokens"]
        # densify: hidden positions of each skip get the stage's mask token
        skips = [torch.where(sparse.visible_for(s.shape[2:]).bool(), s, token.to(s.dtype))
                 for s, token in zip(skips, tokens)]
        reconstruction = decode(model.network, skips)
        return self.forward_loss(reconstruction, images, masked, mask, validating=not model.training)
