"""Reconstruction targets of the restoration methods (mae, sparkmae, modelsgenesis), and the trivial
answer every pretraining run is measured against.

Why the targets are normalized per patch. nnU-Net z-scores each image over the whole volume. A light-sheet
volume is mostly dark background, so tissue lands at 5 to 30 standard deviations: a squared error in that
space is dominated by the few brightest voxels of the few brightest patches, and batch losses jump by
orders of magnitude from one batch to the next. nnU-Net's networks normalize every feature map per sample
(instance norm), so they cannot know a patch's absolute intensity scale anyway. The ``"patch"`` target is
therefore the patch in units of its own spread: ``(x - mean of the visible voxels) / std of the patch``, per
sample and channel. Every patch then weighs alike, and predicting the visible mean (0 in that space) scores
at most ``1 / hidden fraction`` per sample, whatever the microscope. ``"none"`` keeps the intensities of
the preprocessed data (the published MAE setting for z-scored CT and MRI).
"""

from __future__ import annotations

import torch

TARGET_NORMALIZATIONS = ("patch", "none")
_SPATIAL = (2, 3, 4)
_MIN_STD = 1e-6  # a constant patch keeps a finite target


def check_target_normalization(name: str) -> str:
    """``name`` if it is one of ``TARGET_NORMALIZATIONS``, else a ValueError naming them."""
    if name not in TARGET_NORMALIZATIONS:
        raise ValueError(f"target_normalization must be one of {', '.join(TARGET_NORMALIZATIONS)}, got {name!r}")
    return name


def visible_mean(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the visible voxels of each sample and channel.

    Shapes: images (B, C, Z, Y, X); mask (B, 1, Z, Y, X), 1 = hidden; returns (B, C, 1, 1, 1).
    """
    visible = (1 - mask).to(images.dtype)
    total = (images * visible).sum(dim=_SPATIAL, keepdim=True)
    return total / visible.sum(dim=_SPATIAL, keepdim=True).clamp_min(1)


def target_frame(images: torch.Tensor, mask: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) that map the images to the reconstruction target: ``(images - shift) / scale``.

    ``"patch"``: shift = mean of the visible voxels, scale = std of the whole patch (both per sample and
    channel, (B, C, 1, 1, 1)); ``"none"``: 0 and 1. ``mask`` is (B, 1, Z, Y, X), 1 = hidden; a method
    without hidden voxels (Models Genesis restores every voxel) passes zeros.
    """
    images = images.float()
    if normalization == "none":
        zero = images.new_zeros((*images.shape[:2], 1, 1, 1))
        return zero, zero + 1
    std = images.std(dim=_SPATIAL, keepdim=True, unbiased=False).clamp_min(_MIN_STD)
    return visible_mean(images, mask.float()), std


def to_target(images: torch.Tensor, frame: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Images (B, C, Z, Y, X) in the target's units (float32)."""
    shift, scale = frame
    return (images.float() - shift) / scale


def to_images(target: torch.Tensor, frame: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The inverse of ``to_target``: a reconstruction in the target's units back in image units."""
    shift, scale = frame
    return target.float() * scale + shift
