"""Where each output block's prediction comes from: the block grid, nnU-Net's tile grid, and the halo between.

Three voxel spaces per axis, all in the plans' (transposed) axis order:

- *output*: the input image's own voxels, the voxels of the label image written;
- *preprocessed*: resampled to the plans' spacing (``n_prep`` voxels; the output space when no resampling);
- *padded*: preprocessed, zero-padded to at least one patch as nnU-Net pads an image smaller than its patch
  (``offset`` voxels before it).

nnU-Net predicts a whole image with one grid of tiles over the padded space (``compute_steps_for_sliding_window``).
A block of output voxels needs the preprocessed voxels its output voxels interpolate between; every tile of that
one global grid which overlaps them contributes, exactly as in the whole-image prediction. The tiles reach up to
one patch beyond the block: that reach is the block's halo, and the input read is the halo'd range mapped back to
the output space. Each voxel therefore gets nnU-Net's own weighted sum of the same tiles; what differs is only the
resampling (linear here, per block) and the normalization statistics (sampled, as block-wise preprocessing does).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnssl.volumes import resampling

Range = tuple[int, int]


@dataclass(frozen=True)
class AxisGeometry:
    """One (transposed) axis of a case: output, preprocessed and padded sizes, and nnU-Net's tile starts."""

    n_out: int
    n_prep: int
    patch: int
    tile_starts: tuple[int, ...]  # padded coordinates

    @property
    def padded(self) -> int:
        return max(self.n_prep, self.patch)

    @property
    def offset(self) -> int:
        """Zero voxels before the image in the padded space (acvl_utils' ``pad_nd_image``: half, rounded down)."""
        return (self.padded - self.n_prep) // 2

    @property
    def resampled(self) -> bool:
        return self.n_prep != self.n_out


@dataclass(frozen=True)
class AxisPlan:
    """What one axis of one block reads, predicts and writes."""

    out: Range  # output voxels written
    needed: Range  # preprocessed voxels the output voxels interpolate between
    tiles: tuple[int, ...]  # starts (padded coordinates) of the tiles overlapping ``needed``
    union: Range  # padded voxels those tiles cover
    prep: Range  # preprocessed voxels inside ``union`` (the rest is nnU-Net's zero padding)
    raw: Range  # output-space voxels read to resample ``prep`` from
    to_prep: np.ndarray | None  # positions of the ``prep`` voxels in the ``raw`` block (None: no resampling)
    to_out: np.ndarray | None  # positions of the ``out`` voxels in the ``needed`` block (None: no resampling)


def plan_axis(axis: AxisGeometry, out: Range) -> AxisPlan:
    """The plan of output voxels ``out`` of ``axis``."""
    a, e = out
    to_out = None
    if axis.resampled:
        positions = resampling.source_positions(axis.n_out, axis.n_prep)[a:e]
        needed = resampling.input_range(positions, axis.n_prep)
        to_out = positions - needed[0]
    else:
        needed = (a, e)
    low, high = needed[0] + axis.offset, needed[1] + axis.offset
    tiles = tuple(s for s in axis.tile_starts if s < high and s + axis.patch > low)
    union = (min(tiles), max(tiles) + axis.patch)
    prep = (max(0, union[0] - axis.offset), min(axis.n_prep, union[1] - axis.offset))
    to_prep = None
    if axis.resampled:
        positions = resampling.source_positions(axis.n_prep, axis.n_out)[prep[0]:prep[1]]
        raw = resampling.input_range(positions, axis.n_out)
        to_prep = positions - raw[0]
    else:
        raw = prep
    return AxisPlan(out, needed, tiles, union, prep, raw, to_prep, to_out)


@dataclass(frozen=True)
class BlockPlan:
    """One block: its index in the grid and the plan of each transposed axis."""

    index: int
    axes: tuple[AxisPlan, AxisPlan, AxisPlan]

    def tile_starts(self) -> list[tuple[int, int, int]]:
        """Every tile of the block, (z, y, x) starts in padded coordinates."""
        return list(itertools.product(*(a.tiles for a in self.axes)))

    @property
    def out_voxels(self) -> int:
        return int(np.prod([a.out[1] - a.out[0] for a in self.axes]))


class CaseBlocks:
    """The block grid of one case: blocks of ``block_shape`` output voxels (the original axis order, so that
    blocks are whole chunks of the output), each planned in the transposed axis order of the plans."""

    def __init__(self, shape: Sequence[int], transpose: Sequence[int], prep_shape: Sequence[int],
                 patch_size: Sequence[int], tile_starts: Sequence[Sequence[int]], block_shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)  # original axis order
        self.transpose = list(transpose)
        self.block_shape = tuple(int(b) for b in block_shape)  # original axis order
        t_shape = [self.shape[a] for a in self.transpose]
        self.axes = tuple(AxisGeometry(n, int(p), int(ps), tuple(int(s) for s in starts))
                          for n, p, ps, starts in zip(t_shape, prep_shape, patch_size, tile_starts))
        self.grid = tuple(-(-n // b) for n, b in zip(self.shape, self.block_shape))

    def __len__(self) -> int:
        return int(np.prod(self.grid))

    def out_region(self, index: int) -> tuple[Range, Range, Range]:
        """Output voxels of block ``index`` (original axis order; raster order, x fastest)."""
        position = np.unravel_index(index, self.grid)
        return tuple((int(p) * b, min((int(p) + 1) * b, n)) for p, b, n in zip(position, self.block_shape, self.shape))

    def plan(self, index: int) -> BlockPlan:
        region = self.out_region(index)
        t_region = [region[a] for a in self.transpose]
        return BlockPlan(index, tuple(plan_axis(axis, r) for axis, r in zip(self.axes, t_region)))

    def tiles_per_voxel(self) -> float:
        """Tiles computed over all blocks per tile of nnU-Net's whole-image grid (the halo's cost, >= 1)."""
        whole = np.prod([len(a.tile_starts) for a in self.axes])
        per_axis = []
        for t_axis, axis in enumerate(self.axes):
            block = self.block_shape[self.transpose[t_axis]]
            counts = [len(plan_axis(axis, (a, min(a + block, axis.n_out))).tiles) for a in range(0, axis.n_out, block)]
            per_axis.append(sum(counts))
        return float(np.prod(per_axis) / whole)


def default_block_shape(shape: Sequence[int], transpose: Sequence[int], scale: Sequence[float],
                        patch_size: Sequence[int], chunk: int, min_edge: int, patches_per_block: int
                        ) -> tuple[int, int, int]:
    """Block edge per original axis: at least ``min_edge`` output voxels and ``patches_per_block`` patches
    (``scale``: output voxels per preprocessed voxel, transposed order), a whole number of chunks, at most the
    image rounded up to a chunk."""
    edges = [0, 0, 0]
    for t_axis, original_axis in enumerate(transpose):
        wanted = max(min_edge, int(np.ceil(patches_per_block * patch_size[t_axis] * scale[t_axis])))
        edge = -(-wanted // chunk) * chunk
        edges[original_axis] = min(edge, -(-shape[original_axis] // chunk) * chunk)
    return tuple(edges)


@dataclass
class PredictOptions:
    """How the blocks of a case are predicted and written (``nnssl_predict``'s block options)."""

    skip_empty: bool = True
    save_probabilities: bool = False
    block_shape: tuple[int, int, int] | None = None  # output voxels, original axis order; None: the default
    progress_bar: bool = True
