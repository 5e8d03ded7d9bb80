"""Random 3D block masking for masked image modeling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MIN_BLOCKS_PER_AXIS = 8


def block_size_for_patch(patch_size: Sequence[int], block_edge: int = 16,
                         min_blocks_per_axis: int = MIN_BLOCKS_PER_AXIS) -> tuple:
    """Block edge per axis: ``block_edge`` voxels, shrunk so each axis holds ``min_blocks_per_axis`` blocks.

    16 voxels is the published setting for 160³ patches (10 blocks per axis), which this keeps. Smaller
    patches keep about as many blocks per axis rather than the block's edge: a 32x64x64 patch gets (4, 8, 8),
    8x8x8 blocks (a rule of 4 blocks per axis gave (8, 16, 16), 4x4x4 blocks: with 75% hidden, most hidden
    blocks then border only hidden ones). Never below 1 voxel.
    """
    return tuple(max(1, min(block_edge, p // min_blocks_per_axis)) for p in patch_size)


def random_block_mask(
    batch_size: int,
    patch_size: Sequence[int],
    block_size: Sequence[int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Masks ``round(mask_ratio * n_blocks)`` blocks per sample, chosen uniformly without replacement.

    Returns:
        (B, 1, Z, Y, X) float tensor, 1 = masked (hidden from the network), 0 = visible. Blocks at the
        far border are cut to the patch, so the voxel ratio can deviate slightly where the block size
        does not divide the patch.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    grid = [math.ceil(p / b) for p, b in zip(patch_size, block_size)]
    n_blocks = math.prod(grid)
    n_masked = max(1, min(n_blocks - 1, round(mask_ratio * n_blocks)))
    # argsort of uniform noise = a random permutation per sample, drawn from one generator call
    noise = torch.rand(batch_size, n_blocks, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    # to the device at block resolution, then one broadcast copy to voxels (not a full-size host mask)
    block_mask = (ranks < n_masked).to(device, non_blocking=True).float()
    gz, gy, gx = grid
    bz, by, bx = block_size
    voxels = block_mask.view(batch_size, 1, gz, 1, gy, 1, gx, 1).expand(-1, -1, -1, bz, -1, by, -1, bx)
    mask = voxels.reshape(batch_size, 1, gz * bz, gy * by, gx * bx)
    return mask[:, :, : patch_size[0], : patch_size[1], : patch_size[2]].contiguous()
