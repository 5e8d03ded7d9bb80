"""Lazy 3D volumes: BigTIFF stacks, folders of 2D TIFF planes and (OME-)Zarr, read region by region.

Nothing here reads a whole file: TIFF goes through tifffile's Zarr view (pages/tiles decoded on demand),
plane folders read only the planes asked for, Zarr reads chunks. Every volume is one channel,
(Z, Y, X), with a spacing (z, y, x); an OME-Zarr image with a channel axis gives one volume per channel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from nnssl.errors import NnsslError
from nnssl.volumes import ome_zarr
from nnssl.volumes.discovery import LAZY_ENDINGS, PLANES, TIFF_ENDINGS, UnlabeledCase, plane_files

logger = logging.getLogger(__name__)

Region = tuple[slice, slice, slice]
# cases of a lazily readable format this large (voxels, all channels) are preprocessed block by block
DEFAULT_BLOCKWISE_MIN_VOXELS = 2**27


class LazyVolume:
    """One channel of a 3D image, read region by region. ``read(region)`` returns (z, y, x) native dtype."""

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    spacing: tuple[float, float, float]
    z_chunk: int = 1  # planes decoded together (a Zarr chunk's height; a TIFF page is one plane)
    chunk_rows: int = 1  # rows decoded together (a Zarr chunk's)

    def read(self, region: Region, out: np.ndarray | None = None) -> np.ndarray:
        """The voxels of ``region`` (z, y, x), into ``out`` when given and the reader supports it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def _fits(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a reader can decode straight into ``out``."""
    return out is not None and out.shape == shape and out.dtype == dtype and out.flags.c_contiguous


def _checked_shape(path: str, shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or min(shape) < 2:
        raise NnsslError(f"{path}: image of shape {list(shape)} is not 3D; nnssl pretrains on (z, y, x) volumes")
    return tuple(int(s) for s in shape)


class ZarrArrayVolume(LazyVolume):
    """A zarr-readable array (Zarr store or tifffile's view of a TIFF); ``channel`` picks a leading axis."""

    def __init__(self, path: str, array, spacing: Sequence[float], channel: int | None = None) -> None:
        self.path, self.array, self.channel = path, array, channel
        shape = array.shape if channel is None else array.shape[1:]
        self.shape = _checked_shape(path, shape)
        self.dtype = np.dtype(array.dtype)
        self.spacing = tuple(float(s) for s in spacing)
        chunks = getattr(array, "chunks", None)
        self.z_chunk = int(chunks[-3]) if chunks and len(chunks) >= 3 else 1
        self.chunk_rows = int(chunks[-2]) if chunks and len(chunks) >= 2 else 1

    def read(self, region: Region, out: np.ndarray | None = None) -> np.ndarray:
        index = region if self.channel is None else (self.channel, *region)
        shape = tuple(len(range(*r.indices(n))) for r, n in zip(region, self.shape))
        if not _fits(out, shape, self.dtype):
            return np.asarray(self.array[index])
        from zarr.core.buffer.cpu import NDBuffer

        # into the caller's buffer: a fresh array per band costs page faults (reads 1.3-2.5x slower)
        self.array.get_basic_selection(index, out=NDBuffer.from_numpy_array(out))
        return out


# what tifffile logs (and then carries on with the pages it found) when a file's chain of pages is broken, as
# in a truncated copy; a reader would trip over the missing pages in the middle of a run
BROKEN_PAGE_CHAIN = ("invalid page offset", "invalid offset to page", "corrupted tag list", "circular reference")


class _PageChainErrors(logging.Handler):
    """Collects tifffile's messages about a broken chain of pages. While attached it also keeps tifffile's
    messages off the terminal (Python prints records only of loggers without handlers): the problem is
    reported once, as nnssl's one-line error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(sign in message for sign in BROKEN_PAGE_CHAIN):
            self.messages.append(message.split("> ", 1)[-1])  # without tifffile's "<TiffPages @8>" prefix


def _data_end(series) -> int:
    """The end of a TIFF series' image data in its file: of the whole block when contiguous, else of the
    last page's strips or tiles (the pages are in file order)."""
    if series.dataoffset is not None:
        return series.dataoffset + series.nbytes
    last = series.pages[-1]  # None for a page an OME-TIFF declares but does not hold
    return 0 if last is None else max((o + n for o, n in zip(last.dataoffsets, last.databytecounts)), default=0)


def tiff_shape(path: str) -> tuple[int, ...]:
    """The shape of a TIFF's first series, from its header; raises an ``NnsslError`` for a truncated or
    damaged file (a broken chain of pages, or image data past the file's end), before any voxel is read."""
    import tifffile

    broken, log = _PageChainErrors(), logging.getLogger("tifffile")
    log.addHandler(broken)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data_end, size = _data_end(series), tif.filehandle.size
    except Exception:
        if not broken.messages:
            raise  # not a damaged TIFF but no TIFF at all, or one tifffile cannot read: the caller says so
        data_end = size = 0
    finally:
        log.removeHandler(broken)
    if broken.messages or data_end > size:
        detail = broken.messages[0] if broken.messages else f"image data to byte {data_end}, file size {size}"
        raise NnsslError(f"{path}: truncated or damaged TIFF ({detail}); copy it again or remove it")
    return tuple(series.shape)


def open_tiff(path: str, spacing: Sequence[float]) -> LazyVolume:
    """A 3D (Big)TIFF, decoded page by page (or tile by tile) through tifffile's Zarr view."""
    import tifffile
    import zarr

    try:
        shape = tiff_shape(path)
        if len(shape) != 3:
            raise NnsslError(f"{path}: TIFF of shape {list(shape)} is not 3D (z, y, x); store one scalar 3D stack "
                             f"per channel")
        # the store keeps its own file handle open for the volume's lifetime
        array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except NnsslError:
        raise
    except Exception as e:
        raise NnsslError(f"{path}: cannot read this TIFF ({e}); replace or remove it") from e
    return TiffVolume(path, array, spacing)


def decode_threads() -> int:
    """Threads that decode compressed input (zlib and friends release the GIL). Block-wise preprocessing
    waits while its band is decoded, so every core may decode; measured 1.2x faster on 2 cores."""
    return max(1, min(8, os.cpu_count() or 1))


class TiffVolume(ZarrArrayVolume):
    """A TIFF stack: whole planes are decoded page by page (fast), parts of planes through the Zarr view
    (only the strips or tiles needed). The file stays open: reopening it per read parses its pages again."""

    _tif = None

    def read(self, region: Region, out: np.ndarray | None = None) -> np.ndarray:
        whole_planes = all(r.indices(n)[:2] == (0, n) and r.step in (None, 1)
                           for r, n in zip(region[1:], self.shape[1:]))
        if not whole_planes:
            return super().read(region)
        import tifffile

        z_indices = list(range(*region[0].indices(self.shape[0])))
        if not z_indices:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        shape = (len(z_indices), *self.shape[1:])
        target = out if _fits(out, shape, self.dtype) else None
        if self._tif is None:
            self._tif = tifffile.TiffFile(self.path)
        planes = self._tif.asarray(key=z_indices, series=0, maxworkers=decode_threads(), out=target)
        return planes.reshape(shape)


class PlaneFolderVolume(LazyVolume):
    """A folder of 2D TIFF planes (one file per z, natural sort order) as one volume."""

    def __init__(self, folder: str, spacing: Sequence[float]) -> None:
        import tifffile

        self.path, self.files = folder, plane_files(folder)
        try:
            with tifffile.TiffFile(self.files[0]) as tif:
                plane_shape, dtype = tif.series[0].shape, tif.series[0].dtype
        except Exception as e:
            raise NnsslError(f"{self.files[0]}: cannot read this TIFF plane ({e}); replace or remove it") from e
        if len(plane_shape) != 2:
            raise NnsslError(f"{self.files[0]}: plane of shape {list(plane_shape)} is not 2D; a plane folder "
                             f"holds one 2D TIFF per z")
        self.shape = _checked_shape(folder, (len(self.files), *plane_shape))
        self.dtype = np.dtype(dtype)
        self.spacing = tuple(float(s) for s in spacing)

    def read(self, region: Region, out: np.ndarray | None = None) -> np.ndarray:
        import tifffile

        z_indices = range(*region[0].indices(self.shape[0]))
        planes = []
        for z in z_indices:
            try:
                plane = tifffile.imread(self.files[z])
            except Exception as e:
                raise NnsslError(f"{self.files[z]}: cannot read this TIFF plane ({e}); replace or remove it") from e
            if plane.shape != self.shape[1:]:
                raise NnsslError(f"{self.files[z]}: plane of shape {list(plane.shape)}, the folder's first plane "
                                 f"has {list(self.shape[1:])}; all planes must have one shape")
            planes.append(plane[region[1], region[2]])
        return np.stack(planes) if planes else np.zeros((0, 0, 0), self.dtype)


def open_zarr(path: str, spacing: Sequence[float] | None, target_spacing: Sequence[float] | None
              ) -> list[LazyVolume]:
    """One volume per channel of a Zarr / OME-Zarr image; OME levels are chosen by ``target_spacing``."""
    image = ome_zarr.open_image(path, target_spacing)
    if image.spacing is None:
        if spacing is None:
            logger.warning("%s: Zarr without OME metadata, sidecar .json or --spacing; assuming 1 1 1", path)
        image.spacing = tuple(spacing or (1.0, 1.0, 1.0))
    if image.channel_axis:
        return [ZarrArrayVolume(path, image.array, image.spacing, c) for c in range(image.array.shape[0])]
    return [ZarrArrayVolume(path, image.array, image.spacing)]


def open_case_volumes(case: UnlabeledCase) -> list[LazyVolume]:
    """One lazy volume per channel of a TIFF, plane-folder or Zarr case (same shape for every channel)."""
    volumes: list[LazyVolume] = []
    for path in case.image_files:
        if case.file_ending in TIFF_ENDINGS:
            volumes.append(open_tiff(path, case.tiff_spacing))
        elif case.file_ending == PLANES:
            volumes.append(PlaneFolderVolume(path, case.tiff_spacing))
        else:
            volumes.extend(open_zarr(path, case.tiff_spacing, case.target_spacing))
    for volume in volumes[1:]:
        if volume.shape != volumes[0].shape:
            raise NnsslError(f"{volume.path}: shape {list(volume.shape)} differs from channel 0 "
                             f"({list(volumes[0].shape)}, {volumes[0].path}); channels must have one shape")
    return volumes


def case_voxels(case: UnlabeledCase) -> int:
    """Voxels of all channels together (headers only)."""
    volumes = open_case_volumes(case)
    return len(volumes) * int(np.prod(volumes[0].shape))


def is_large_case(case: UnlabeledCase, min_voxels: int) -> bool:
    """Whether ``case`` is preprocessed block by block: a lazily readable format at or above ``min_voxels``
    (all channels together). Other formats (NIfTI, MHA, NRRD) are always read whole by nnU-Net's readers."""
    return case.file_ending in LAZY_ENDINGS and case_voxels(case) >= min_voxels


def read_whole(volumes: Sequence[LazyVolume]) -> np.ndarray:
    """(C, Z, Y, X) float32 of small volumes."""
    full = (slice(None), slice(None), slice(None))
    return np.stack([v.read(full).astype(np.float32, copy=False) for v in volumes])


SAMPLE_PLANES = 16
SAMPLE_VOXELS_PER_PLANE = 1 << 16
SAMPLE_BANDS = 8  # each sampled plane is read in one of this many row bands


def sample_voxels(volumes: Sequence[LazyVolume], n_planes: int = SAMPLE_PLANES,
                  visit: Callable[[list[np.ndarray]], None] | None = None) -> list[np.ndarray]:
    """Per channel, a 1D float32 sample of the voxels (statistics without reading the whole volume).

    Evenly spaced z planes, thinned to at most ``SAMPLE_VOXELS_PER_PLANE`` voxels each. Planes larger than
    ``SAMPLE_BANDS`` times that are read in one band of rows (``1/SAMPLE_BANDS`` of the plane, at least one
    chunk high; the bands cycle through the plane from one sampled plane to the next). Bands, not whole
    planes: a Zarr chunk holds many planes, so 16 whole planes of a volume 16 chunks deep would decode all of
    it; the bands decode 1/8 of that.

    ``visit``, when given, also receives every band as read, one (1, rows, X) array per channel, so that
    another statistic of the same sample costs no second read.
    """
    n_z, n_y, n_x = volumes[0].shape
    planes = np.unique(np.linspace(0, n_z - 1, min(n_planes, n_z)).round().astype(int))
    chunk_rows = max(v.chunk_rows for v in volumes)
    band = n_y
    if n_y * n_x > SAMPLE_BANDS * SAMPLE_VOXELS_PER_PLANE:
        band = min(n_y, max(chunk_rows, -(-n_y // SAMPLE_BANDS // chunk_rows) * chunk_rows))
    n_bands = -(-n_y // band)
    values: list[list[np.ndarray]] = [[] for _ in volumes]
    for i, z in enumerate(planes):
        y0 = (i % n_bands) * band
        region = (slice(z, z + 1), slice(y0, min(y0 + band, n_y)), slice(None))
        bands = [volume.read(region) for volume in volumes]
        if visit is not None:
            visit(bands)
        for channel_values, plane in zip(values, bands):
            plane = plane.ravel()
            step = max(1, plane.size // SAMPLE_VOXELS_PER_PLANE)
            channel_values.append(plane[::step].astype(np.float32))
    return [np.concatenate(channel_values) for channel_values in values]


def read_region(volume: LazyVolume, transpose: Sequence[int], ranges: list[tuple[int, int]],
                out: np.ndarray | None = None) -> np.ndarray:
    """Input region given in transposed axis order, returned in transposed axis order (into ``out`` when the
    axis order is unchanged and the reader can)."""
    region = [slice(None)] * 3
    for out_axis, (low, high) in enumerate(ranges):
        region[transpose[out_axis]] = slice(low, high)
    if list(transpose) == [0, 1, 2]:
        return volume.read(tuple(region), out)
    return np.transpose(volume.read(tuple(region)), transpose)
