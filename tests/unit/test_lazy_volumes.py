"""Lazy readers and discovery of large-volume formats: BigTIFF, folders of planes, (OME-)Zarr."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from nnssl.errors import NnsslError
from nnssl.volumes import ome_zarr
from nnssl.volumes.discovery import PLANES, channel_count, discover_cases
from nnssl.volumes.lazy import open_case_volumes, read_whole, sample_voxels, tiff_shape
from tests import lsm_files

SHAPE = (20, 40, 36)


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, SHAPE, dtype=np.uint16)


def _slabs(volume: np.ndarray):
    return lambda z0, z1: volume[z0:z1]


REGION = (slice(3, 11), slice(5, 30), slice(7, 20))


def test_bigtiff_reads_regions_and_whole_planes(tmp_path):
    volume = _volume()
    lsm_files.write_bigtiff(str(tmp_path / "a.tiff"), SHAPE, np.uint16, _slabs(volume), (2.0, 1.0, 1.0),
                            slab=7, rows_per_strip=8)
    assert tifffile.TiffFile(tmp_path / "a.tiff").is_bigtiff
    (case,) = discover_cases([str(tmp_path)])
    assert case.tiff_spacing == [2.0, 1.0, 1.0]  # from the sidecar a.json
    (lazy,) = open_case_volumes(case)
    assert lazy.shape == SHAPE and lazy.dtype == np.uint16
    np.testing.assert_array_equal(lazy.read(REGION), volume[REGION])  # part of the planes: strips
    np.testing.assert_array_equal(lazy.read((slice(4, 9), slice(None), slice(None))), volume[4:9])  # whole planes


def test_plane_folder_is_one_volume_in_natural_order(tmp_path):
    volume = _volume(1)
    folder = tmp_path / "in" / "brain_0000"
    folder.mkdir(parents=True)
    for z in range(SHAPE[0]):  # z2.tif must come before z10.tif
        tifffile.imwrite(folder / f"z{z}.tif", volume[z])
    (case,) = discover_cases([str(tmp_path / "in")])
    assert case.identifier == "brain" and case.file_ending == PLANES
    (lazy,) = open_case_volumes(case)
    np.testing.assert_array_equal(lazy.read(REGION), volume[REGION])
    # the plane folder itself given as the input
    (direct,) = discover_cases([str(folder)])
    assert direct.identifier == "brain"


def test_plane_folder_with_a_differing_plane_fails_clearly(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for z in range(4):
        tifffile.imwrite(folder / f"p{z}.tif", np.ones((8, 8) if z != 2 else (8, 9), np.uint16))
    (lazy,) = open_case_volumes(discover_cases([str(tmp_path)])[0])
    with pytest.raises(NnsslError, match=r"p2.tif: plane of shape \[8, 9\]"):
        read_whole([lazy])


def test_ome_zarr_level_closest_to_the_target_spacing(tmp_path):
    volume = _volume(2)
    path = str(tmp_path / "organ.ome.zarr")
    lsm_files.write_ome_zarr(path, SHAPE, np.uint16, _slabs(volume), (1.0, 0.5, 0.5), levels=2, chunks=(8, 16, 16))
    (case,) = discover_cases([str(tmp_path)])
    assert case.identifier == "organ" and channel_count(case) == 1
    (level0,) = open_case_volumes(case)
    assert level0.spacing == (1.0, 0.5, 0.5) and level0.shape == SHAPE
    np.testing.assert_array_equal(level0.read(REGION), volume[REGION])
    case.target_spacing = [1.8, 1.1, 0.9]
    (level1,) = open_case_volumes(case)
    assert level1.spacing == (2.0, 1.0, 1.0) and level1.shape == tuple(s // 2 for s in SHAPE)


def test_choose_level():
    spacings = [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert ome_zarr.choose_level(spacings, None) == 0
    assert ome_zarr.choose_level(spacings, (2.2, 1.9, 2.0)) == 1
    assert ome_zarr.choose_level(spacings, (10, 10, 10)) == 2
    assert ome_zarr.choose_level(spacings, (2 ** 0.5,) * 3) == 0  # a tie goes to the finer level


def _ome_group(path, data: np.ndarray, axes: str) -> None:
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space")} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * (len(axes) - 3) + [3.0, 1.0, 1.0]}]}]}]


def test_ome_zarr_with_channel_and_time_axes(tmp_path):
    data = np.stack([_volume(3), _volume(4)])[None]  # (t=1, c=2, z, y, x)
    _ome_group(str(tmp_path / "two.ome.zarr"), data, "tczyx")
    (case,) = discover_cases([str(tmp_path)])
    assert channel_count(case) == 2
    volumes = open_case_volumes(case)
    assert [v.spacing for v in volumes] == [(3.0, 1.0, 1.0)] * 2
    np.testing.assert_array_equal(read_whole(volumes), data[0].astype(np.float32))


def test_time_series_is_refused(tmp_path):
    _ome_group(str(tmp_path / "movie.ome.zarr"), np.zeros((3, 4, 5, 6), np.uint16), "tzyx")
    with pytest.raises(NnsslError, match="time series of 3 points"):
        open_case_volumes(discover_cases([str(tmp_path)])[0])


def test_plain_zarr_array_takes_the_sidecar_spacing(tmp_path):
    import zarr

    zarr.open_array(str(tmp_path / "raw.zarr"), mode="w", shape=SHAPE, dtype=np.uint16)[...] = _volume(5)
    (tmp_path / "raw.json").write_text(json.dumps({"spacing": [4.0, 1.0, 1.0]}))
    (lazy,) = open_case_volumes(discover_cases([str(tmp_path)])[0])
    assert lazy.spacing == (4.0, 1.0, 1.0)


def test_sample_covers_small_volumes_entirely(tmp_path):
    volume = _volume(6)
    lsm_files.write_bigtiff(str(tmp_path / "s.tiff"), SHAPE, np.uint16, _slabs(volume), (1, 1, 1))
    (sample,) = sample_voxels(open_case_volumes(discover_cases([str(tmp_path)])[0]))
    # 16 evenly spaced planes of 20, every voxel of each (planes are below the per-plane cap)
    planes = np.unique(np.linspace(0, SHAPE[0] - 1, 16).round().astype(int))
    np.testing.assert_array_equal(np.sort(sample), np.sort(volume[planes].ravel().astype(np.float32)))


def test_sample_of_large_planes_reads_cycling_row_bands(tmp_path):
    """Planes above 8 x 65536 voxels are sampled one row band (1/8 of the plane, whole chunks) at a time,
    the band moving down the plane from one sampled plane to the next."""
    import zarr

    shape, chunk_rows = (16, 512, 1152), 32
    volume = np.random.default_rng(7).integers(0, 60000, shape, dtype=np.uint16)
    zarr.open_array(str(tmp_path / "wide.zarr"), mode="w", shape=shape, chunks=(8, chunk_rows, 256),
                    dtype=np.uint16)[...] = volume
    (tmp_path / "wide.json").write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
    (lazy,) = open_case_volumes(discover_cases([str(tmp_path)])[0])
    assert lazy.chunk_rows == chunk_rows
    (sample,) = sample_voxels([lazy])
    band = 64  # 512 rows / 8, a whole number of 32-row chunks
    expected = [volume[z, (z % 8) * band:(z % 8 + 1) * band].ravel() for z in range(16)]
    np.testing.assert_array_equal(sample, np.concatenate(expected).astype(np.float32))


@pytest.mark.parametrize("options", [{}, {"bigtiff": True, "compression": "zlib"}, {"bigtiff": True, "tile": (16, 16)},
                                     {"metadata": None}])
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_tiff_is_refused_from_its_header(tmp_path, options, keep):
    """Cut copies: tifffile parses what is left and a reader would fail only at the missing part."""
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _volume(), **options)
    assert tiff_shape(str(path)) == SHAPE
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(NnsslError, match="cut.tif: truncated or damaged TIFF"):
        tiff_shape(str(path))
