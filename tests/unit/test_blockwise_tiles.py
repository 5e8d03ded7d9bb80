"""Tiles of block-wise preprocessing: the plane-by-plane float16 path and the whole-tile path agree bit for
bit, on the right voxels of the band."""

from __future__ import annotations

import numpy as np

from nnssl.nnunet_adapter.block_normalization import block_normalizers
from nnssl.pretraining.data import blockwise_tiles as tiles


def test_half_tile_equals_normalizing_the_whole_tile_then_converting():
    rng = np.random.default_rng(0)
    band = rng.integers(90, 4000, size=(6, 40, 50), dtype=np.uint16)  # rows 20..60 of the volume
    sample = band.ravel().astype(np.float32)
    case = tiles.CaseTiles(
        normalizers=block_normalizers(["ZScoreNormalization"], [False], {}, [sample]),
        geometry=tiles.Geometry((6, 80, 50), (6, 80, 50), [None, None, None]),
        image_file="organ.tiff", input_dtype=np.dtype(np.uint16), storage_dtype=np.dtype(np.float16),
        chunks=(1, 6, 8, 10), blocks=(1, 6, 8, 10),
    )
    band_info = tiles.Band(0, (0, 6), (24, 56), [(0, 6), (20, 60), (0, 50)], None, True)
    box = (24, 40, 10, 30)  # output rows 24..40, columns 10..30
    half = tiles.half_tile([band], case, band_info, box, tiles.Scratch()).copy()
    whole = tiles.as_storage_type(tiles.process_tile([band], case, band_info, box, tiles.Scratch()),
                                  np.dtype(np.float16), tiles.Scratch())
    assert half.shape == whole.shape == (1, 6, 16, 20)
    np.testing.assert_array_equal(half.view(np.uint16), whole.view(np.uint16))
    # and both are the z-score of the right voxels: band rows 4..20 are volume rows 24..40
    expected = (band[:, 4:20, 10:30].astype(np.float32) - sample.mean()) / sample.std()
    np.testing.assert_allclose(half[0].astype(np.float32), expected, atol=2e-3, rtol=1e-3)
