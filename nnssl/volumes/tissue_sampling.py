"""Content-aware patch sampling: where the tissue is, from a coarse grid of block means.

Most of a light-sheet volume is dark background. While a case is preprocessed, the mean intensity of
every ``CELL``^3 voxel cell is accumulated (all channels averaged, after normalization); Otsu's threshold
on those means separates tissue cells from background cells. The centres of up to ``MAX_LOCATIONS``
tissue cells are stored as the case's sampling locations (nnU-Net's ``class_locations`` layout,
(N, 4) rows of (0, z, y, x)), from which nnU-Net's loader centres patches. A documented fraction of
patches (``random_patch_fraction``, default 0.05) stays uniformly random so that no region is never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELL = 16
MAX_LOCATIONS = 10_000
TISSUE_KEY = 1  # the key of the tissue locations in nnU-Net's class_locations
# the label map of a preprocessed unlabeled case (its class_locations), whatever the dataset's labels are
TISSUE_LABELS = {"background": 0, "tissue": TISSUE_KEY}
DEFAULT_RANDOM_PATCH_FRACTION = 0.05


@dataclass
class GridPart:
    """Sums and counts of the cells one block touches: ``cells`` per axis, arrays (n_z, n_y, n_x)."""

    cells: tuple[np.ndarray, np.ndarray, np.ndarray]
    sums: np.ndarray
    counts: np.ndarray


def _axis_cells(origin: int, length: int, cell: int, stride: int
                ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(first sampled voxel, segment starts in the sample, their cells, segment lengths) of one axis."""
    first = (-origin) % stride
    cells = (origin + np.arange(first, length, stride)) // cell
    starts = np.concatenate([[0], np.flatnonzero(np.diff(cells)) + 1]).astype(np.int64)
    return first, starts, cells[starts], np.diff(np.append(starts, len(cells)))


def block_sums(block: np.ndarray, origin: tuple[int, int, int], cell: int = CELL, stride: int = 4
               ) -> GridPart | None:
    """What ``block`` (z, y, x), whose first voxel sits at ``origin``, adds to a ``CoarseGrid``: the sums and
    counts of its lattice voxels per cell (None if no lattice voxel lies in it). Apart from the grid, so that
    worker processes can compute it."""
    axes = [_axis_cells(o, n, cell, stride) for o, n in zip(origin, block.shape)]
    if any(first >= n for (first, _, _, _), n in zip(axes, block.shape)):
        return None
    sums = block[axes[0][0]::stride, axes[1][0]::stride, axes[2][0]::stride]
    for axis in (2, 1, 0):
        sums = np.add.reduceat(sums, axes[axis][1], axis=axis, dtype=np.float64)
    counts = np.einsum("i,j,k->ijk", *(lengths for _, _, _, lengths in axes))
    return GridPart(tuple(cells for _, _, cells, _ in axes), sums, counts)


class CoarseGrid:
    """Per-cell sums and counts over a (Z, Y, X) volume, filled block by block in any order.

    Only every ``stride``-th voxel along each axis (on a lattice fixed in volume coordinates) is summed:
    a 16^3 cell still gets 64 samples, at 1/64 of the cost, and the result does not depend on the blocks.
    """

    def __init__(self, shape: tuple[int, int, int], cell: int = CELL, stride: int = 4) -> None:
        self.shape, self.cell, self.stride = tuple(shape), cell, stride
        grid_shape = tuple(-(-s // cell) for s in shape)
        self.sums = np.zeros(grid_shape, np.float64)
        self.counts = np.zeros(grid_shape, np.int64)

    def add_part(self, part: GridPart | None) -> None:
        if part is not None:
            index = np.ix_(*part.cells)
            self.sums[index] += part.sums
            self.counts[index] += part.counts

    def add(self, block: np.ndarray, origin: tuple[int, int, int]) -> None:
        """Accumulates ``block`` (z, y, x) whose first voxel sits at ``origin``."""
        self.add_part(block_sums(block, origin, self.cell, self.stride))

    def means(self) -> np.ndarray:
        return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)


def tissue_cells(means: np.ndarray) -> np.ndarray:
    """Boolean grid of cells above Otsu's threshold of the cell means (none if the means are uniform)."""
    valid = np.isfinite(means)
    values = means[valid]
    if values.size == 0 or np.ptp(values) <= 1e-6 * max(1.0, float(np.abs(values).max())):
        return np.zeros(means.shape, bool)
    from skimage.filters import threshold_otsu

    return valid & (means > threshold_otsu(values))


def tissue_locations(grid: CoarseGrid, seed: int = 0, max_locations: int = MAX_LOCATIONS) -> np.ndarray:
    """(N, 4) int64 rows (0, z, y, x): the centres of (at most ``max_locations`` random) tissue cells.

    Centres, not random voxels: a patch at least one cell wide centred there covers the whole cell, so
    it holds the cell's tissue even where the tissue fills only part of the cell (organ borders).
    """
    cells = np.argwhere(tissue_cells(grid.means()))
    if len(cells) == 0:
        return np.zeros((0, 4), np.int64)
    rng = np.random.default_rng(seed)
    chosen = cells[np.sort(rng.choice(len(cells), min(max_locations, len(cells)), replace=False))]
    ends = np.minimum((chosen + 1) * grid.cell, np.array(grid.shape))  # edge cells end at the volume's border
    voxels = (chosen * grid.cell + ends) // 2
    return np.concatenate([np.zeros((len(voxels), 1), np.int64), voxels], axis=1)


def class_locations(grid: CoarseGrid, seed: int = 0) -> dict:
    """nnU-Net's ``properties['class_locations']`` for a label-free case: the tissue locations."""
    return {TISSUE_KEY: tissue_locations(grid, seed)}


def locations_of_array(data: np.ndarray, seed: int = 0) -> dict:
    """``class_locations`` of a preprocessed case held in memory, data (C, Z, Y, X)."""
    grid = CoarseGrid(data.shape[1:])
    grid.add(data.mean(axis=0), (0, 0, 0))
    return class_locations(grid, seed)
