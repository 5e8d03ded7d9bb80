"""Tiny nnU-Net networks (3 stages, 8/16/32 features) for unit tests of the SSL methods."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

ARCHITECTURES = ("PlainConvUNet", "ResidualEncoderUNet")
PATCH = (16, 32, 32)


def tiny_unet(architecture: str = "PlainConvUNet", input_channels: int = 1, output_channels: int = 1):
    common = dict(input_channels=input_channels, n_stages=3, features_per_stage=[8, 16, 32],
                  conv_op=torch.nn.Conv3d, kernel_sizes=3, strides=[1, 2, 2], num_classes=output_channels,
                  n_conv_per_stage_decoder=1, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                  nonlin_kwargs={"inplace": True})
    if architecture == "PlainConvUNet":
        return PlainConvUNet(n_conv_per_stage=2, **common)
    return ResidualEncoderUNet(n_blocks_per_stage=[1, 2, 2], **common)
