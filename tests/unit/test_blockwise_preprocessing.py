"""Block-wise preprocessing: same voxels as whole-volume normalization + resampling, chunked nnU-Net format,
tissue locations, and resuming after an interruption."""

from __future__ import annotations

import json
import os
import pickle

import blosc2
import numpy as np
import pytest
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter import case_store
from nnssl.pretraining.data import blockwise_preprocessing as blockwise
from nnssl.volumes import resampling
from nnssl.volumes.discovery import discover_cases
from tests import lsm_files

SHAPE = (16, 60, 52)  # <= 16 planes of <= 65536 voxels: the intensity sample is the whole volume


@pytest.fixture
def organ(tmp_path):
    """A BigTIFF light-sheet-like volume (bright ellipsoid in flat background) at spacing (2, 1, 1)."""
    make_slab = lsm_files.lsm_like_slab(SHAPE, seed=4, tissue_radius=0.35)
    volume = make_slab(0, SHAPE[0])
    (tmp_path / "in").mkdir()
    lsm_files.write_bigtiff(str(tmp_path / "in" / "organ.tiff"), SHAPE, np.uint16, make_slab, (2.0, 1.0, 1.0),
                            rows_per_strip=8)
    (case,) = discover_cases([str(tmp_path / "in")])
    return case, volume


def _target(transpose=(0, 1, 2), spacing=(2.0, 1.0, 1.0)) -> blockwise.BlockwiseTarget:
    return blockwise.BlockwiseTarget(list(transpose), list(spacing), [8, 16, 16], ["ZScoreNormalization"],
                                     [False], {})


def _reference(volume: np.ndarray, transpose, in_spacing, target_spacing) -> np.ndarray:
    """nnU-Net's z-score on the whole volume, transposed, then whole-volume linear resampling."""
    data = np.transpose(volume, transpose).astype(np.float32)
    data = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(data)
    spacing = [in_spacing[a] for a in transpose]
    shape = case_store.resampled_shape(data.shape, spacing, target_spacing)
    positions = [None if a == b else resampling.source_positions(b, a) for a, b in zip(data.shape, shape)]
    return resampling.resample_block(data, positions)


def _load(folder, case_id):
    data = blosc2.open(os.path.join(folder, case_id + ".b2nd"), mode="r")[:]
    with open(os.path.join(folder, case_id + ".pkl"), "rb") as f:
        return data, pickle.load(f)


@pytest.mark.parametrize(("transpose", "target_spacing"), [
    ((0, 1, 2), (2.0, 1.0, 1.0)),  # no resampling
    ((0, 1, 2), (1.5, 1.3, 0.7)),  # up- and downsampling
    ((1, 0, 2), (1.0, 2.0, 1.0)),  # nnU-Net's axis transposition, no resampling
])
@pytest.mark.parametrize("workers", [0, 2])
def test_blockwise_equals_whole_volume(organ, tmp_path, monkeypatch, transpose, target_spacing, workers):
    case, volume = organ
    # tiny read and tile budgets: many bands, tiles and slabs on a small volume
    monkeypatch.setattr(blockwise, "READ_BYTES", 6000)
    monkeypatch.setattr(blockwise, "TILE_BYTES", 5000)
    out = tmp_path / "out"
    out.mkdir()
    blockwise.preprocess_large_case(case, _target(transpose, target_spacing), str(out), workers=workers)
    data, properties = _load(out, "organ")
    expected = _reference(volume, transpose, (2.0, 1.0, 1.0), target_spacing)
    assert data.shape == (1, *expected.shape) and data.dtype == np.float16  # uint16 input: every z-score fits
    np.testing.assert_allclose(data[0], expected, rtol=1e-3, atol=1e-3)  # stored as float16
    assert os.path.isfile(out / "organ_seg.b2nd") and not os.path.exists(out / "organ.inprogress")
    assert properties["spacing"] == [2.0, 1.0, 1.0]
    locations = properties["class_locations"][1]
    assert len(locations) > 0
    # tissue locations sit where the organ (bright) is, in the preprocessed volume
    values = data[0][tuple(locations[:, 1:].T)]
    assert np.median(values) > 0


def test_worker_processes_write_the_same_file_as_the_main_process_alone(organ, tmp_path, monkeypatch):
    """Tiles processed by forked workers, with one band buffer (2 workers) and with two (4 workers, the next
    band decoded while the workers process one): the same voxels, tissue locations and chunk bytes as
    tiles processed one after another in the main process."""
    case, _ = organ
    monkeypatch.setattr(blockwise, "READ_BYTES", 6000)
    monkeypatch.setattr(blockwise, "TILE_BYTES", 3000)
    results = {}
    for workers in (0, 2, 4):
        out = tmp_path / f"workers{workers}"
        out.mkdir()
        blockwise.preprocess_large_case(case, _target(spacing=(1.0, 1.0, 1.0)), str(out), workers=workers)
        data = blosc2.open(str(out / "organ.b2nd"), mode="r")
        results[workers] = (_load(out, "organ"), [data.schunk.get_chunk(i) for i in range(data.schunk.nchunks)])
    (data0, properties0), chunks0 = results[0]
    for workers in (2, 4):
        (data, properties), chunks = results[workers]
        np.testing.assert_array_equal(data, data0)
        np.testing.assert_array_equal(properties["class_locations"][1], properties0["class_locations"][1])
        assert chunks == chunks0


def test_error_in_a_worker_is_one_line_naming_the_file(tmp_path):
    """A NaN found by a worker process reaches the caller as nnssl's error, naming the image."""
    shape = (8, 40, 40)
    volume = np.ones(shape, np.float32)
    volume[5, 30, 30] = np.nan
    (tmp_path / "in").mkdir()
    lsm_files.write_bigtiff(str(tmp_path / "in" / "organ.tiff"), shape, np.float32, lambda z0, z1: volume[z0:z1],
                            (1, 1, 1))
    (case,) = discover_cases([str(tmp_path / "in")])
    (tmp_path / "out").mkdir()
    with pytest.raises(NnsslError, match=r"organ\.tiff: contains NaN or Inf voxels"):
        blockwise.preprocess_large_case(case, _target(spacing=(1.0, 1.0, 1.0)), str(tmp_path / "out"), workers=2)
    assert not case_store.is_complete(str(tmp_path / "out"), "organ")


def test_interrupted_case_resumes_at_the_next_slab(organ, tmp_path, monkeypatch):
    case, _ = organ
    monkeypatch.setattr(blockwise, "READ_BYTES", 6000)
    target = _target()
    reference = tmp_path / "reference"
    reference.mkdir()
    blockwise.preprocess_large_case(case, target, str(reference))

    real_read, reads = blockwise.read_region, []

    def failing_read(volume, transpose, ranges, out=None):
        reads.append(ranges)
        if sum(r[0][0] > 0 for r in reads) == 2:  # inside the second slab: the first one is saved
            raise KeyboardInterrupt
        return real_read(volume, transpose, ranges, out)

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(blockwise, "read_region", failing_read)
    with pytest.raises(KeyboardInterrupt):
        blockwise.preprocess_large_case(case, target, str(out))
    assert not case_store.is_complete(str(out), "organ") and not os.path.exists(out / "organ.b2nd")
    with open(out / "organ.inprogress" / "progress.json") as f:
        state = json.load(f)
    assert state["slabs_done"] >= 1
    submitted = []
    monkeypatch.setattr(blockwise, "read_region", lambda volume, transpose, ranges, out=None:
                        submitted.append(ranges) or real_read(volume, transpose, ranges, out))
    blockwise.preprocess_large_case(case, target, str(out))
    # slabs written before the interruption are not read again (no resampling: input z = output z)
    assert submitted[0][0][0] == state["slabs_done"] * state["slab"]
    resumed, resumed_properties = _load(out, "organ")
    expected, expected_properties = _load(reference, "organ")
    np.testing.assert_array_equal(resumed, expected)
    np.testing.assert_array_equal(resumed_properties["class_locations"][1], expected_properties["class_locations"][1])


def test_loader_centres_patches_on_tissue(tmp_path):
    """nnU-Net's loader with the tissue locations: patches hold tissue far more often than uniform ones."""

    shape = (32, 128, 128)
    (tmp_path / "in").mkdir()
    make_slab = lsm_files.lsm_like_slab(shape, seed=5, tissue_radius=0.2)  # ~97% background
    lsm_files.write_bigtiff(str(tmp_path / "in" / "organ.tiff"), shape, np.uint16, make_slab, (1, 1, 1))
    (case,) = discover_cases([str(tmp_path / "in")])
    out = tmp_path / "out"
    out.mkdir()
    blockwise.preprocess_large_case(case, _target(spacing=(1.0, 1.0, 1.0)), str(out))
    mask = lsm_files.tissue_mask_slab(shape, tissue_radius=0.2)(0, shape[0])

    def fraction(random_fraction: float) -> float:
        boxes = lsm_files.sample_patch_boxes(str(out), ["organ"], [16, 32, 32], {"configurations": {}}, 200,
                                   random_fraction, seed=1)
        hits = [mask[tuple(slice(max(0, lo), hi) for lo, hi in zip(lower, upper))].any() for _, lower, upper in boxes]
        return float(np.mean(hits))

    assert fraction(0.0) == 1.0
    assert fraction(1.0) < 0.8  # uniform placement misses the organ in about a third of the patches


def test_compressed_tiles_match_slice_assignment_including_edge_chunks(tmp_path):
    """Tiles compressed in memory and copied chunk by chunk land exactly where a slice assignment puts them,
    also the tiles that end at the array's (not chunk-aligned) end, for two channels."""
    shape, patch = (2, 40, 150, 130), (16, 32, 32)
    expected = np.random.default_rng(3).standard_normal(shape).astype(np.float16)
    data = case_store.open_data(str(tmp_path), "case", shape, patch, np.float16)
    chunks = data.chunks
    assert any(n % c for n, c in zip(shape, chunks)), "the layout should leave partial chunks at the end"
    step = [c * 2 for c in chunks[1:]]
    for z0 in range(0, shape[1], step[0]):
        for y0 in range(0, shape[2], step[1]):
            for x0 in range(0, shape[3], step[2]):
                tile = expected[:, z0:z0 + step[0], y0:y0 + step[1], x0:x0 + step[2]]
                compressed = case_store.compress_tile(np.ascontiguousarray(tile), data.chunks, data.blocks)
                case_store.write_chunks(data, compressed, tile.shape, (0, z0, y0, x0))
    del data
    np.testing.assert_array_equal(blosc2.open(case_store.data_path(str(tmp_path), "case"))[...], expected)
    with pytest.raises(ValueError, match="not on the chunk grid"):
        case_store.write_chunks(blosc2.open(case_store.data_path(str(tmp_path), "case"), mode="a"),
                                [b""], (2, 4, 4, 4), (0, 1, 0, 0))
