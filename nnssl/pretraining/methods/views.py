"""Two augmented, overlapping views of each patch, for the two-view methods (SimCLR, BYOL).

The patches arrive with nnU-Net's spatial and intensity augmentation already applied (one draw per
patch). Each view is a random crop of the patch, ``crop_fraction`` of its size per axis, so the two
views of a patch always overlap (a fraction above 1/2 guarantees it), followed by a cheap, per-view
augmentation on the device: mirroring per axis, a brightness/contrast change and Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_crop_fraction(crop_fraction: float) -> float:
    """``crop_fraction`` if it is in (0.5, 1], the range in which two views of a patch always overlap."""
    if not 0.5 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0.5, 1] so that the two views overlap, got {crop_fraction}")
    return float(crop_fraction)


def crop_size(patch_size: Sequence[int], crop_fraction: float) -> tuple[int, ...]:
    """Edge lengths of a view: ``crop_fraction`` of the patch per axis, at least 1 voxel."""
    return tuple(max(1, round(p * crop_fraction)) for p in patch_size)


def random_crops(images: torch.Tensor, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """One random crop of ``size`` per sample: (B, C, Z, Y, X) -> (B, C, *size)."""
    crops = []
    for sample in images:
        starts = [int(torch.randint(0, n - s + 1, (1,), generator=generator)) for n, s in zip(sample.shape[1:], size)]
        crops.append(sample[:, starts[0]:starts[0] + size[0], starts[1]:starts[1] + size[1],
                            starts[2]:starts[2] + size[2]])
    return torch.stack(crops)


def augment_view(view: torch.Tensor, generator: torch.Generator, noise_std: float = 0.1,
                 intensity_range: tuple[float, float] = (0.75, 1.25)) -> torch.Tensor:
    """Per-sample mirroring (each axis with p = 0.5), intensity scale and shift, and Gaussian noise.

    (B, C, Z, Y, X) -> (B, C, Z, Y, X); random numbers come from ``generator`` (CPU), so views are
    reproducible from the seed.
    """
    b = view.shape[0]
    flips = torch.rand(b, 3, generator=generator) < 0.5
    view = torch.stack([s.flip([1 + a for a in range(3) if flips[i, a]]) if flips[i].any() else s
                        for i, s in enumerate(view)])
    low, high = intensity_range
    scale = (low + (high - low) * torch.rand(b, 1, 1, 1, 1, generator=generator)).to(view.device, view.dtype)
    shift = (0.2 * torch.rand(b, 1, 1, 1, 1, generator=generator) - 0.1).to(view.device, view.dtype)
    sigma = (noise_std * torch.rand(b, 1, 1, 1, 1, generator=generator)).to(view.device, view.dtype)
    noise = torch.randn(view.shape, generator=generator).to(view.device, view.dtype)
    return view * scale + shift + sigma * noise


def two_views(images: torch.Tensor, crop_fraction: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, Z, Y, X) -> two views, each (B, C, *crop_size(patch, crop_fraction))."""
    size = crop_size(images.shape[2:], crop_fraction)
    return tuple(augment_view(random_crops(images, size, generator), generator) for _ in range(2))
