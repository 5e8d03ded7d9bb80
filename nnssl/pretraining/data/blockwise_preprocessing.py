"""Preprocesses one volume larger than memory block by block: transpose, normalize, resample, store.

Same steps and order as nnU-Net's preprocessor (transpose to the plan's axis order, normalize, resample
to the plan's spacing), without cropping to the nonzero region. The output is walked in slabs of one
chunk row along z; each slab is read in bands of rows (bounded bytes, every channel at once) and
processed in chunk-aligned tiles, so memory depends on the chunk and band sizes, never on the volume.
Statistics for z-score normalization come from a sample of evenly spaced planes. After each slab the
progress (slabs done, tissue grid) is saved, so an interrupted run resumes at the next slab.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nnssl.atomic_files import write_atomic, write_json_atomic
from nnssl.nnunet_adapter import case_store
from nnssl.nnunet_adapter.block_normalization import block_normalizers
from nnssl.nnunet_adapter.fingerprint import analyze_sample
from nnssl.pretraining.data.blockwise_tiles import Band, CaseTiles, Geometry, TileWorkers, input_range
from nnssl.volumes import resampling
from nnssl.volumes.discovery import UnlabeledCase
from nnssl.volumes.lazy import LazyVolume, open_case_volumes, read_region, sample_voxels
from nnssl.volumes.tissue_sampling import CoarseGrid, class_locations

logger = logging.getLogger(__name__)

READ_BYTES = 512 * 1024**2  # raw input held at once (one band of one slab, all channels)
TILE_BYTES = 64 * 1024**2  # float32 output processed at once


@dataclass
class BlockwiseTarget:
    """What the plans ask of a case (from nnU-Net's configuration)."""

    transpose_forward: list[int]
    spacing: list[float]  # target spacing, transposed axis order
    patch_size: list[int]
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    intensity_properties: dict


def _geometry(volume: LazyVolume, target: BlockwiseTarget) -> Geometry:
    in_shape = tuple(volume.shape[a] for a in target.transpose_forward)
    in_spacing = [volume.spacing[a] for a in target.transpose_forward]
    out_shape = case_store.resampled_shape(in_shape, in_spacing, target.spacing)
    positions = [None if n_in == n_out else resampling.source_positions(n_out, n_in)
                 for n_in, n_out in zip(in_shape, out_shape)]
    return Geometry(in_shape, out_shape, positions)


class _Progress:
    """Slabs done and the tissue grid of a case being written (``<case>.inprogress/``)."""

    def __init__(self, folder: str, case_id: str, out_shape: tuple[int, int, int], slab: int) -> None:
        self.work = case_store.work_folder(folder, case_id)
        self.state_file = os.path.join(self.work, "progress.json")
        self.grid, self.slabs_done, self.slab = CoarseGrid(out_shape), 0, slab
        if os.path.isfile(self.state_file):
            with open(self.state_file) as f:
                state = json.load(f)
            if state["slab"] == slab and tuple(state["out_shape"]) == tuple(out_shape):
                with np.load(os.path.join(self.work, "grid.npz")) as grid:
                    self.grid.sums, self.grid.counts = grid["sums"], grid["counts"]
                self.slabs_done = state["slabs_done"]

    def save(self, slabs_done: int) -> None:
        self.slabs_done = slabs_done
        write_atomic(os.path.join(self.work, "grid.npz"),
                     lambda f: np.savez(f, sums=self.grid.sums, counts=self.grid.counts))
        state = {"slabs_done": slabs_done, "slab": self.slab, "out_shape": list(self.grid.shape)}
        write_json_atomic(self.state_file, state, indent=None)


def _band_rows(volumes: list[LazyVolume], geometry: Geometry, slab: int, chunk_rows: int) -> int:
    """Output rows per read band: a multiple of the chunk rows keeping the raw input under READ_BYTES."""
    in_planes = slab if geometry.positions[0] is None else slab * geometry.in_shape[0] / geometry.out_shape[0] + 2
    scale_y = geometry.in_shape[1] / geometry.out_shape[1]
    bytes_per_out_row = len(volumes) * volumes[0].dtype.itemsize * geometry.in_shape[2] * in_planes * scale_y
    rows = int(READ_BYTES / bytes_per_out_row)
    if rows >= geometry.out_shape[1]:
        return geometry.out_shape[1]  # whole planes: TIFF pages decode fastest whole
    return max(chunk_rows, rows // chunk_rows * chunk_rows)


def _bands(geometry: Geometry, slab: int, band_rows: int, first_slab: int) -> list[Band]:
    bands = []
    for index, z0 in enumerate(range(0, geometry.out_shape[0], slab)):
        if index < first_slab:
            continue
        z_range = (z0, min(z0 + slab, geometry.out_shape[0]))
        z_low, z_high, z_positions = input_range(geometry.positions[0], *z_range, geometry.in_shape[0])
        for y0 in range(0, geometry.out_shape[1], band_rows):
            y1 = min(y0 + band_rows, geometry.out_shape[1])
            y_low, y_high, _ = input_range(geometry.positions[1], y0, y1, geometry.in_shape[1])
            input_ranges = [(z_low, z_high), (y_low, y_high), (0, geometry.in_shape[2])]
            bands.append(Band(index, z_range, (y0, y1), input_ranges, z_positions, y1 == geometry.out_shape[1]))
    return bands


def _tiles(n_channels: int, band: Band, chunks: Sequence[int], n_columns: int) -> list[tuple[int, int, int, int]]:
    """Chunk-aligned (y0, y1, x0, x1) tiles of a band: whole rows where they fit TILE_BYTES (contiguous)."""
    (z0, z1), (y0, y1) = band.z_range, band.y_range
    row_bytes = 4 * n_channels * (z1 - z0) * n_columns
    rows = max(chunks[2], int(TILE_BYTES / row_bytes) // chunks[2] * chunks[2])
    columns = n_columns
    if rows * row_bytes > 2 * TILE_BYTES:  # very wide planes: split the columns too
        columns = max(chunks[3], int(TILE_BYTES * n_columns / (row_bytes * rows)) // chunks[3] * chunks[3])
    return [(y, min(y + rows, y1), x, min(x + columns, n_columns))
            for y in range(y0, y1, rows) for x in range(0, n_columns, columns)]


def _storage_dtype(volumes: list[LazyVolume], normalizers) -> np.dtype:
    """float16 when every value the input type can hold normalizes into float16's range, else float32."""
    if not np.issubdtype(volumes[0].dtype, np.integer):
        return np.dtype(np.float32)
    info = np.iinfo(volumes[0].dtype)
    for normalize in normalizers:
        extremes = np.empty((1, 1, 2), np.float32)
        normalize(np.array([[[info.min, info.max]]], np.float32), extremes)
        if not np.all(np.abs(extremes) < 6e4):
            return np.dtype(np.float32)
    return np.dtype(np.float16)


@contextlib.contextmanager
def _torch_on_one_thread() -> Iterator[None]:
    """torch's OpenMP workers spin for a while after each parallel region (here: each float16 conversion),
    taking the cores the TIFF decode threads need (through the CLI on 2 cores: up to 1.15x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def default_workers() -> int:
    """Worker processes of block-wise preprocessing: one per core, at most 8 (each holds a few tiles)."""
    return max(1, min(8, os.cpu_count() or 1))


def preprocess_large_case(case: UnlabeledCase, target: BlockwiseTarget, folder: str, seed: int = 0,
                          workers: int | None = None) -> None:
    """Writes ``case`` into ``folder`` in nnU-Net's format, resuming an interrupted run of the same case.

    ``workers`` processes (default ``default_workers()``; 0: the main process alone) normalize, convert and
    compress tiles while the main process decodes the input and writes the compressed chunks.
    """
    with _torch_on_one_thread():
        _preprocess_large_case(case, target, folder, seed, default_workers() if workers is None else workers)


def _case_tiles(case: UnlabeledCase, volumes: list[LazyVolume], target: BlockwiseTarget, folder: str
                ) -> tuple[CaseTiles, object]:
    """What the tiles of ``case`` need, and its in-progress output array."""
    geometry = _geometry(volumes[0], target)
    normalizers = block_normalizers(target.normalization_schemes, target.use_mask_for_norm,
                                    target.intensity_properties, sample_voxels(volumes))
    aligned = geometry.positions[0] is None and target.transpose_forward[0] == 0  # output z = input z
    data = case_store.open_data(folder, case.identifier, (len(volumes), *geometry.out_shape), target.patch_size,
                                _storage_dtype(volumes, normalizers), volumes[0].z_chunk if aligned else None)
    tiles = CaseTiles(normalizers, geometry, case.image_files[0], volumes[0].dtype, data.dtype, data.chunks,
                      data.blocks)
    return tiles, data


def _preprocess_large_case(case: UnlabeledCase, target: BlockwiseTarget, folder: str, seed: int,
                           workers: int) -> None:
    volumes = open_case_volumes(case)
    tiles, data = _case_tiles(case, volumes, target, folder)
    geometry, slab = tiles.geometry, data.chunks[1]
    progress = _Progress(folder, case.identifier, geometry.out_shape, slab)
    if progress.slabs_done:
        logger.info("%s: resuming block-wise preprocessing at slab %d of %d", case.identifier,
                    progress.slabs_done + 1, -(-geometry.out_shape[0] // slab))
    bands = _bands(geometry, slab, _band_rows(volumes, geometry, slab, data.chunks[2]), progress.slabs_done)
    band_bytes = max((len(volumes) * int(np.prod(b.input_shape)) * volumes[0].dtype.itemsize for b in bands),
                     default=0)
    with TileWorkers(tiles, band_bytes, workers) as pool:
        _write_bands(bands, volumes, target.transpose_forward, pool, data, progress)
    del data
    properties = {
        "spacing": list(volumes[0].spacing), "shape_before_cropping": list(geometry.in_shape),
        "bbox_used_for_cropping": [[0, s] for s in geometry.in_shape],
        "shape_after_cropping_and_before_resampling": list(geometry.in_shape),
        "class_locations": class_locations(progress.grid, seed),
        "nnssl_blockwise": True,
    }
    case_store.finish_case(folder, case.identifier, properties, target.patch_size)


def _write_bands(bands: list[Band], volumes: list[LazyVolume], transpose: Sequence[int], pool: TileWorkers,
                 data, progress: _Progress) -> None:
    """Decodes each band into a free band buffer, hands its tiles to the workers, writes every band's
    chunks in order and saves the progress after each slab's last band."""
    pending: collections.deque[tuple[Band, int, list]] = collections.deque()

    def finish_oldest() -> None:
        band, _, futures = pending.popleft()
        for future in futures:
            result = pool.result(future)
            case_store.write_chunks(data, result.chunks, result.shape, result.start)
            progress.grid.add_part(result.grid_part)
        if band.last_of_slab:
            progress.save(band.slab_index + 1)

    for index, band in enumerate(bands):
        slot = index % pool.n_buffers
        while pending and any(s == slot for _, s, _ in pending):  # the buffer is still being processed
            finish_oldest()
        for volume, buffer in zip(volumes, pool.band(slot, len(volumes), band.input_shape)):
            raw = read_region(volume, transpose, band.input_ranges, buffer)
            if raw is not buffer:  # readers that cannot decode into the buffer (transposed, plane folders)
                buffer[...] = raw
        futures = [pool.submit(slot, len(volumes), band, box)
                   for box in _tiles(len(volumes), band, data.chunks, progress.grid.shape[2])]
        pending.append((band, slot, futures))
    while pending:
        finish_oldest()


class LargeCaseWriter:
    """Picklable ``(case_id, folder) -> None`` for the cases preprocessed block by block."""

    def __init__(self, cases: dict[str, UnlabeledCase], target: BlockwiseTarget, workers: int | None = None) -> None:
        self.cases, self.target, self.workers = cases, target, workers

    def __call__(self, case_id: str, folder: str) -> None:
        preprocess_large_case(self.cases[case_id], self.target, folder, workers=self.workers)


def fingerprint_entry(case: UnlabeledCase, num_samples: int) -> dict:
    """nnU-Net fingerprint entries of a large case from a voxel sample (no whole read)."""
    volumes = open_case_volumes(case)
    return analyze_sample(sample_voxels(volumes), volumes[0].shape, volumes[0].spacing, num_samples)
