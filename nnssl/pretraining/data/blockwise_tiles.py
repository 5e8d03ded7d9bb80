"""The tiles of block-wise preprocessing: normalize, resample, convert and compress, in worker processes.

Compressing the output costs about as much as everything else together, and blosc2 holds the GIL while it
compresses, so threads cannot share that work; processes can. The main process decodes a band of the input
into a shared band buffer (anonymous shared memory, inherited by forked workers) and hands out the
band's tiles. Each worker normalizes, resamples and converts one tile, compresses it into the output array's
chunks and returns them with the tile's tissue-grid sums; the main process writes the chunks in order.
With 4 or more workers, the main process decodes the next band into a second buffer meanwhile.

Workers are forked (Linux), so they inherit the case's normalizers and start in milliseconds; elsewhere,
or with ``workers=0``, tiles are processed in the main process, one after another, with the same results.
"""

from __future__ import annotations

import mmap
import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter import case_store
from nnssl.volumes import resampling
from nnssl.volumes.tissue_sampling import GridPart, block_sums
from nnssl.worker_processes import die_with_parent


def band_buffers(workers: int) -> int:
    """Band buffers: with 4 or more workers, the main process decodes the next band into a second buffer
    while the workers process the current one. On 2 cores, decoding and the workers already keep both
    cores busy: a second buffer measured no faster and costs a band of memory (512 MiB)."""
    return 2 if workers >= 4 else 1


@dataclass
class Geometry:
    in_shape: tuple[int, int, int]  # transposed axis order
    out_shape: tuple[int, int, int]
    positions: list[np.ndarray | None]  # per output axis: input positions, None = no resampling


def input_range(positions: np.ndarray | None, start: int, stop: int, n_in: int) -> tuple[int, int, np.ndarray | None]:
    """Input [start, stop) needed for output [start, stop) of one axis, and the positions relative to it."""
    if positions is None:
        return start, stop, None
    part = positions[start:stop]
    low, high = resampling.input_range(part, n_in)
    return low, high, part - low


@dataclass
class Band:
    """Output planes [z0, z1) (one slab) and rows [y0, y1), the input ranges they need and the slab's
    z positions (relative to its first input plane)."""

    slab_index: int
    z_range: tuple[int, int]
    y_range: tuple[int, int]
    input_ranges: list[tuple[int, int]]
    z_positions: np.ndarray | None
    last_of_slab: bool

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(high - low for low, high in self.input_ranges)


@dataclass
class CaseTiles:
    """What every tile of one case needs besides its band: inherited by the workers, never pickled."""

    normalizers: list[Callable[[np.ndarray, np.ndarray], None]]  # (raw block, float32 out)
    geometry: Geometry
    image_file: str  # named in errors
    input_dtype: np.dtype
    storage_dtype: np.dtype
    chunks: tuple[int, ...]  # of the output array, (C, z, y, x)
    blocks: tuple[int, ...]


@dataclass
class TileResult:
    start: tuple[int, int, int, int]  # (0, z, y, x) in the output array
    shape: tuple[int, ...]  # (C, z, y, x)
    chunks: list[bytes]  # compressed, in the tile's chunk order
    grid_part: GridPart | None


class Scratch:
    """Reused buffers. Fresh arrays of tens of MiB per tile cost page faults (kernel time) that rival
    the computation itself; views into buffers kept for the whole case do not."""

    def __init__(self) -> None:
        self._buffers: dict[object, np.ndarray] = {}

    def array(self, key: object, shape: Sequence[int], dtype) -> np.ndarray:
        size, dtype = int(np.prod(shape)), np.dtype(dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[key] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)


def process_tile(raw: list[np.ndarray], case: CaseTiles, band: Band, tile_box: tuple[int, int, int, int],
                 scratch: Scratch) -> np.ndarray:
    """(C, z, y, x) float32 output tile from the raw band (C arrays (z, y, x): its input planes and rows,
    every column)."""
    y0, y1, x0, x1 = tile_box
    geometry = case.geometry
    y_low, y_high, y_positions = input_range(geometry.positions[1], y0, y1, geometry.in_shape[1])
    y_low, y_high = y_low - band.input_ranges[1][0], y_high - band.input_ranges[1][0]  # rows of the band
    x_low, x_high, x_positions = input_range(geometry.positions[2], x0, x1, geometry.in_shape[2])
    tile = scratch.array("tile", (len(raw), raw[0].shape[0], y_high - y_low, x_high - x_low), np.float32)
    for c, band_data in enumerate(raw):
        case.normalizers[c](band_data[:, y_low:y_high, x_low:x_high], tile[c])
        if np.issubdtype(band_data.dtype, np.floating) and not np.isfinite(tile[c]).all():  # NaN stays NaN
            raise NnsslError(f"{case.image_file}: contains NaN or Inf voxels; fix or remove this image")
    return resampling.resample_block(tile, [band.z_positions, y_positions, x_positions])


def as_storage_type(tile: np.ndarray, dtype: np.dtype, scratch: Scratch) -> np.ndarray:
    if dtype == np.float16:  # torch's vectorized conversion is several times faster than numpy's
        import torch

        half = scratch.array("half", tile.shape, np.float16)
        torch.from_numpy(half).copy_(torch.from_numpy(np.ascontiguousarray(tile)))
        return half
    return tile.astype(dtype, copy=False)


def half_tile(raw: list[np.ndarray], case: CaseTiles, band: Band, tile_box: tuple[int, int, int, int],
              scratch: Scratch) -> np.ndarray:
    """(C, z, y, x) float16 output tile of an integer band without resampling, normalized plane by plane.

    The same values as ``process_tile`` then ``as_storage_type``, but each plane's float32 values stay in
    the CPU cache between normalizing and converting (that step measured 1.7x faster than in whole-tile passes).
    """
    import torch

    y0, y1, x0, x1 = tile_box
    y_low = y0 - band.input_ranges[1][0]  # rows of the band
    half = scratch.array("half", (len(raw), raw[0].shape[0], y1 - y0, x1 - x0), np.float16)
    plane = scratch.array("plane", (y1 - y0, x1 - x0), np.float32)
    plane_torch = torch.from_numpy(plane)
    for c, band_data in enumerate(raw):
        for z in range(band_data.shape[0]):
            case.normalizers[c](band_data[z, y_low:y_low + y1 - y0, x0:x1], plane)
            torch.from_numpy(half[c, z]).copy_(plane_torch)
    return half


def _band_arrays(buffer: mmap.mmap, case: CaseTiles, n_channels: int,
                 shape: tuple[int, int, int]) -> list[np.ndarray]:
    """The band's C raw arrays, views of one band buffer."""
    count = int(np.prod(shape))
    return [np.frombuffer(buffer, case.input_dtype, count, c * count * case.input_dtype.itemsize).reshape(shape)
            for c in range(n_channels)]


def _run_tile(buffers: list, case: CaseTiles, scratch: Scratch, slot: int, n_channels: int, band: Band,
              tile_box: tuple[int, int, int, int]) -> TileResult:
    raw = _band_arrays(buffers[slot], case, n_channels, band.input_shape)
    start = (0, band.z_range[0], tile_box[0], tile_box[2])
    if case.storage_dtype == np.float16 and all(p is None for p in case.geometry.positions):
        stored = half_tile(raw, case, band, tile_box, scratch)
        tile = stored
    else:
        tile = process_tile(raw, case, band, tile_box, scratch)
        stored = as_storage_type(tile, case.storage_dtype, scratch)
    # the lattice of CoarseGrid's defaults, which the case's tissue grid uses
    grid_part = block_sums(tile[0] if len(tile) == 1 else tile.mean(axis=0, dtype=np.float32), start[1:])
    chunks = case_store.compress_tile(stored, case.chunks, case.blocks)
    return TileResult(start, stored.shape, chunks, grid_part)


_worker: dict = {}  # in a worker process: its band buffers, case and scratch (inherited or set up at start)


def _start_worker() -> None:
    die_with_parent()
    import torch

    torch.set_num_threads(1)  # one core per worker; OpenMP threads would only contend
    _worker["scratch"] = Scratch()


def _worker_tile(slot: int, n_channels: int, band: Band, tile_box: tuple[int, int, int, int]) -> TileResult:
    return _run_tile(_worker["buffers"], _worker["case"], _worker["scratch"], slot, n_channels, band, tile_box)


class TileWorkers:
    """Band buffers and the processes (or the main process) that turn their tiles into compressed chunks.

    ``band(i, n_channels, shape)`` gives band buffer i as C writable (z, y, x) arrays; ``submit(i, ...)``
    processes one tile of that buffer and returns a future of its ``TileResult``. Use as a context manager.
    """

    def __init__(self, case: CaseTiles, buffer_bytes: int, workers: int) -> None:
        self.case = case
        # MAP_SHARED anonymous memory: the forked workers see what the main process decodes into it
        self._buffers = [mmap.mmap(-1, max(1, buffer_bytes)) for _ in range(band_buffers(workers))]
        self._executor = None
        if workers > 0 and sys.platform.startswith("linux"):
            _worker.update(buffers=self._buffers, case=case)  # inherited by fork, never pickled
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=_start_worker)
        self._scratch = Scratch()

    @property
    def n_buffers(self) -> int:
        return len(self._buffers)

    def band(self, slot: int, n_channels: int, shape: tuple[int, int, int]) -> list[np.ndarray]:
        return _band_arrays(self._buffers[slot], self.case, n_channels, shape)

    def submit(self, slot: int, n_channels: int, band: Band, tile_box: tuple[int, int, int, int]) -> Future:
        if self._executor is not None:
            return self._executor.submit(_worker_tile, slot, n_channels, band, tile_box)
        future: Future = Future()
        future.set_result(_run_tile(self._buffers, self.case, self._scratch, slot, n_channels, band, tile_box))
        return future

    def result(self, future: Future) -> TileResult:
        try:
            return future.result()
        except BrokenProcessPool:
            raise NnsslError(f"{self.case.image_file}: a preprocessing worker process died (out of memory?); "
                             "rerun the command to resume, with fewer --blockwise-workers") from None

    def __enter__(self) -> TileWorkers:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            _worker.clear()
