"""Separable linear resampling that gives the same voxels whether a volume is resampled whole or in blocks.

Output voxel i of an axis samples input position ``(i + 0.5) * n_in / n_out - 0.5`` (voxel centres kept,
as ``align_corners=False``), clamped to the input. A block of output voxels needs the input range
``input_range`` returns (one voxel of halo beyond the outermost positions); resampling that input
block with the positions shifted to it gives exactly the voxels of a whole-volume resampling.
"""

from __future__ import annotations

import numpy as np


def source_positions(n_out: int, n_in: int) -> np.ndarray:
    """(n_out,) float64 input positions of the output voxels of one axis."""
    positions = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(positions, 0, n_in - 1)


def input_range(positions: np.ndarray, n_in: int) -> tuple[int, int]:
    """[start, stop) of the input voxels that ``positions`` interpolate between."""
    start = int(np.floor(positions.min()))
    return start, min(n_in, int(np.floor(positions.max())) + 2)


def resample_axis(block: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``block`` along ``axis`` at ``positions`` (relative to the block's start).

    block: (..., n, ...) float32 -> (..., len(positions), ...) float32.
    """
    n = block.shape[axis]
    if n == 1:
        return np.repeat(block, len(positions), axis=axis)
    low = np.clip(np.floor(positions).astype(np.int64), 0, n - 2)
    weight = (positions - low).astype(np.float32)
    shape = [1] * block.ndim
    shape[axis] = len(positions)
    weight = weight.reshape(shape)
    lower = np.take(block, low, axis=axis)
    upper = np.take(block, low + 1, axis=axis)
    lower *= 1 - weight
    upper *= weight
    lower += upper
    return lower


def resample_block(block: np.ndarray, positions: list[np.ndarray | None]) -> np.ndarray:
    """Resamples the last three axes of ``block`` (..., z, y, x); ``None`` leaves an axis as it is."""
    offset = block.ndim - 3
    for axis, axis_positions in enumerate(positions):
        if axis_positions is not None:
            block = resample_axis(block, offset + axis, axis_positions)
    return block
