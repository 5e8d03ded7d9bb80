"""The parts of nnU-Net's networks (dynamic_network_architectures) that SSL methods use.

``PlainConvUNet`` and ``ResidualEncoderUNet`` both have an ``encoder`` whose forward returns the
feature map of every stage (shallow to deep, the skips) and a ``decoder`` that turns those skips
into the network's output. Methods that need more than ``network(images)`` go through these helpers,
so the names of nnU-Net's attributes live here only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from nnssl.errors import NnsslError


def encoder_of(network: nn.Module) -> nn.Module:
    encoder = getattr(network, "encoder", None)
    if encoder is None or not hasattr(encoder, "output_channels"):
        raise NnsslError(f"{type(network).__name__} has no nnU-Net encoder (an 'encoder' with 'output_channels'); "
                         f"this SSL method needs a PlainConvUNet or ResidualEncoderUNet")
    return encoder


def decoder_of(network: nn.Module) -> nn.Module:
    decoder = getattr(network, "decoder", None)
    if decoder is None:
        raise NnsslError(f"{type(network).__name__} has no 'decoder'; this SSL method needs a PlainConvUNet or "
                         f"ResidualEncoderUNet")
    return decoder


def decoder_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The decoder's own parameters (nnU-Net's decoder also holds a reference to the encoder)."""
    encoder_ids = {id(p) for p in encoder_of(network).parameters()}
    return [p for p in decoder_of(network).parameters() if id(p) not in encoder_ids]


def encoder_channels(network: nn.Module) -> list[int]:
    """Feature channels of every encoder stage, shallow to deep."""
    channels = encoder_of(network).output_channels
    return [int(c) for c in (channels if isinstance(channels, (list, tuple)) else [channels])]


def run_encoder(encoder: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, Z, Y, X) -> the skips: one (B, C_s, Z_s, Y_s, X_s) map per stage, shallow to deep
    (only the deepest if the encoder was built without skips)."""
    skips = encoder(images)
    return list(skips) if isinstance(skips, (list, tuple)) else [skips]


def encode(network: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """``run_encoder`` with the network's encoder."""
    return run_encoder(encoder_of(network), images)


def decode(network: nn.Module, skips: list[torch.Tensor]) -> torch.Tensor:
    """The skips (as ``encode`` returns them) -> the full-resolution output (B, C_out, Z, Y, X).

    With deep supervision on, the decoder returns every resolution; the first is the full one.
    """
    output = decoder_of(network)(skips)
    return output[0] if isinstance(output, (list, tuple)) else output


def encoder_norm_layers(network: nn.Module) -> list[nn.Module]:
    """The encoder's normalization layers (instance or batch norm), in forward order."""
    return [m for m in encoder_of(network).modules() if isinstance(m, (_InstanceNorm, _BatchNorm))]


def normalized_over_visible(norm: nn.Module, features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``norm`` applied with statistics of the visible positions only; hidden positions come out 0.

    This is the normalization of a sparse convolutional network (SparK): hidden voxels neither shift
    the statistics nor carry values to the next layer.

    Shapes: features (B, C, Z, Y, X); visible (B, 1, Z, Y, X), 1 = visible; returns (B, C, Z, Y, X).
    """
    x = features.float()
    dims = (2, 3, 4) if isinstance(norm, _InstanceNorm) else (0, 2, 3, 4)
    count = visible.sum(dim=dims, keepdim=True).clamp_min(1.0)
    x_visible = x * visible
    mean = x_visible.sum(dim=dims, keepdim=True) / count
    # sums of x and x² (as synchronized batch norm does): two passes fewer than centring first
    var = ((x_visible * x).sum(dim=dims, keepdim=True) / count - mean * mean).clamp_min(0.0)
    scale = torch.rsqrt(var + norm.eps)
    if getattr(norm, "weight", None) is not None:
        scale = scale * norm.weight.view(1, -1, 1, 1, 1)
        shift = norm.bias.view(1, -1, 1, 1, 1) - mean * scale
    else:
        shift = -mean * scale
    # x_visible * scale + shift * visible: 0 at hidden positions
    return torch.addcmul(shift * visible, x_visible, scale).to(features.dtype)
