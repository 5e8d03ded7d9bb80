"""Block-wise resampling and the tissue grid: block by block equals whole volume; analytic values."""

from __future__ import annotations

import numpy as np
import pytest

from nnssl.volumes import resampling
from nnssl.volumes.tissue_sampling import CoarseGrid, locations_of_array, tissue_cells, tissue_locations


@pytest.mark.parametrize(("n_in", "n_out"), [(37, 20), (37, 74), (50, 33), (8, 8)])
def test_blockwise_resampling_equals_whole(n_in, n_out):
    volume = np.random.default_rng(0).random((n_in, 9, 7)).astype(np.float32)
    positions = resampling.source_positions(n_out, n_in)
    whole = resampling.resample_block(volume.copy(), [positions, None, None])
    parts = []
    for start in range(0, n_out, 6):
        part = positions[start:start + 6]
        low, high = resampling.input_range(part, n_in)
        parts.append(resampling.resample_block(volume[low:high].copy(), [part - low, None, None]))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_linear_ramp_is_resampled_exactly():
    # a linear ramp stays linear: the value at output voxel i is the ramp at its input position
    ramp = np.arange(30, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32) * 2.0 + 1.0
    out = resampling.resample_block(ramp, [resampling.source_positions(12, 30), None, None])
    expected = 2.0 * ((np.arange(12) + 0.5) * 30 / 12 - 0.5) + 1.0
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_grid_block_by_block_equals_whole():
    volume = np.random.default_rng(1).random((37, 50, 29)).astype(np.float32)
    whole, parts = CoarseGrid(volume.shape), CoarseGrid(volume.shape)
    whole.add(volume, (0, 0, 0))
    for z in range(0, 37, 10):
        for y in range(0, 50, 13):
            for x in range(0, 29, 7):
                parts.add(volume[z:z + 10, y:y + 13, x:x + 7], (z, y, x))
    np.testing.assert_allclose(parts.sums, whole.sums)
    np.testing.assert_array_equal(parts.counts, whole.counts)
    # the lattice samples every 4th voxel per axis: 10 x 13 x 8 of them
    assert whole.counts.sum() == 10 * 13 * 8
    assert whole.sums.sum() == pytest.approx(volume[::4, ::4, ::4].sum(), rel=1e-6)


def test_tissue_locations_lie_in_the_bright_region():
    volume = np.full((64, 96, 96), 100.0, np.float32)
    volume[16:48, 48:96, 16:48] = 900.0  # the 'organ', on 16^3 cell boundaries: 2 x 3 x 2 cells
    locations = locations_of_array(volume[None], seed=0)[1]
    assert len(locations) == 2 * 3 * 2  # the centre of every tissue cell
    assert (locations[:, 0] == 0).all()
    inside = ((locations[:, 1] >= 16) & (locations[:, 1] < 48) & (locations[:, 2] >= 48)
              & (locations[:, 3] >= 16) & (locations[:, 3] < 48))
    assert inside.all()


def test_uniform_volume_has_no_tissue_cells():
    grid = CoarseGrid((32, 32, 32))
    grid.add(np.full((32, 32, 32), 5.0, np.float32), (0, 0, 0))
    assert not tissue_cells(grid.means()).any()
    assert tissue_locations(grid).shape == (0, 4)
