"""The label image of one case: an OME-Zarr (NGFF 0.4) label image with a pyramid, written block by block.

Layout of ``<case>.ome.zarr`` (Zarr format 2, blosc-zstd chunks): arrays ``0``, ``1``, … (full resolution,
then 2x nearest-neighbour subsampling per level in z, y and x), ``multiscales`` and ``image-label`` metadata
written by the ``ome-zarr`` library, and an ``nnssl`` entry saying how it was predicted. napari (with
napari-ome-zarr) opens it as a labels layer. Probabilities, when asked for, are ``<case>_probabilities.zarr``:
one float16 (K, Z, Y, X) array.

While a case is predicted everything lives in ``<case>.ome.zarr.partial/``, with the journal of finished blocks;
the folder is renamed to its final name only when every block is written, so a reader never takes a partial
result for a complete one. Every block covers whole chunks of every level (blocks are a whole number of
chunks, and each level's chunks are the block's share of it at most), so processes never write one chunk twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import numpy as np

from nnssl.atomic_files import write_json_atomic
from nnssl.errors import NnsslError

OUTPUT_CHUNK = 64  # voxels per axis of a full-resolution chunk
MIN_LEVEL_BLOCK = 16  # a pyramid level stops when a block's share of it would be smaller than this
MAX_TOP_LEVEL = 128  # …or when the previous level already fits this many voxels per axis
PARTIAL_SUFFIX = ".partial"
SETTINGS_FILE = "nnssl_prediction_settings.json"
PROBABILITIES_GROUP = "probabilities"


def label_image_path(output_folder: str, case_id: str) -> str:
    return os.path.join(output_folder, f"{case_id}.ome.zarr")


def probabilities_path(output_folder: str, case_id: str) -> str:
    return os.path.join(output_folder, f"{case_id}_probabilities.zarr")


def pyramid_levels(shape: Sequence[int], block_shape: Sequence[int]) -> int:
    """Levels of the label pyramid (full resolution included)."""
    levels = 1
    while min(block_shape) // 2**levels >= MIN_LEVEL_BLOCK and max(shape) / 2 ** (levels - 1) > MAX_TOP_LEVEL:
        levels += 1
    return levels


def _compressor():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)


class LabelImageWriter:
    """The partial output of one case: created by one process, opened by all, finished by one."""

    def __init__(self, final_path: str, shape: Sequence[int], block_shape: Sequence[int], dtype: np.dtype,
                 num_probabilities: int = 0) -> None:
        self.final_path, self.path = final_path, final_path + PARTIAL_SUFFIX
        self.shape, self.block_shape = tuple(shape), tuple(block_shape)
        self.dtype, self.num_probabilities = np.dtype(dtype), num_probabilities
        self.levels = pyramid_levels(self.shape, self.block_shape)
        self.arrays: list = []
        self.probabilities = None

    @property
    def journal_folder(self) -> str:
        return os.path.join(self.path, ".nnssl_journal")

    def level_chunks(self, level: int) -> tuple[int, ...]:
        return tuple(min(OUTPUT_CHUNK, b // 2**level) for b in self.block_shape)

    def create_or_check(self, settings: dict) -> bool:
        """Creates the partial output, or checks that an existing one was started with ``settings``.
        Returns True when it resumes an existing one."""
        settings_file = os.path.join(self.path, SETTINGS_FILE)
        if os.path.isdir(self.path):
            try:
                with open(settings_file) as f:
                    previous = json.load(f)
            except (OSError, ValueError):
                previous = None
            if previous != settings:
                raise NnsslError(f"{self.path}: an unfinished prediction with other settings (model, flags or "
                                 f"block size); remove it or rerun with the settings it was started with")
            return True
        import zarr

        root = zarr.open_group(self.path, mode="w", zarr_format=2)
        for level in range(self.levels):
            level_shape = [-(-s // 2**level) for s in self.shape]
            root.create_array(str(level), shape=level_shape, chunks=self.level_chunks(level), dtype=self.dtype,
                              compressors=_compressor(), fill_value=0)
        if self.num_probabilities:
            root.create_array(PROBABILITIES_GROUP, shape=(self.num_probabilities, *self.shape),
                              chunks=(1, *self.level_chunks(0)), dtype=np.float16, compressors=_compressor(),
                              fill_value=0)
        os.makedirs(self.journal_folder, exist_ok=True)
        write_json_atomic(settings_file, settings, indent=1)
        return False

    def open(self) -> None:
        import zarr

        root = zarr.open_group(self.path, mode="r+", zarr_format=2)
        self.arrays = [root[str(level)] for level in range(self.levels)]
        self.probabilities = root[PROBABILITIES_GROUP] if self.num_probabilities else None

    def write_block(self, region: Sequence[tuple[int, int]], labels: np.ndarray,
                    probabilities: np.ndarray | None = None) -> None:
        """labels (z, y, x) and probabilities (K, z, y, x) float16 of the block at ``region`` (original order)."""
        for level, array in enumerate(self.arrays):
            step = 2**level
            index = tuple(slice(a // step, -(-e // step)) for a, e in region)
            array[index] = labels[::step, ::step, ::step]
        if self.probabilities is not None and probabilities is not None:
            self.probabilities[(slice(None), *(slice(a, e) for a, e in region))] = probabilities

    def finish(self, spacing: Sequence[float], label_names: dict[int, str], attributes: dict) -> None:
        """NGFF metadata through ome-zarr, then the rename that marks the output complete."""
        import zarr
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

        fmt = FormatV04()
        root = zarr.open_group(self.path, mode="r+", zarr_format=2)
        datasets = [{"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) * 2**level for s in spacing]}]} for level in range(self.levels)]
        axes = [{"name": name, "type": "space", "unit": "micrometer"} for name in "zyx"]
        write_multiscales_metadata(root, datasets, fmt=fmt, axes=axes, name=os.path.basename(self.final_path))
        label_metadata = {"version": fmt.version,
                          "properties": [{"label-value": v, "name": n} for v, n in sorted(label_names.items())]}
        add_metadata(root, {"image-label": label_metadata, "nnssl": attributes}, fmt=fmt)
        shutil.rmtree(self.journal_folder, ignore_errors=True)
        os.remove(os.path.join(self.path, SETTINGS_FILE))
        if self.num_probabilities:
            folder = os.path.dirname(self.final_path)
            case = os.path.basename(self.final_path)[: -len(".ome.zarr")]
            target = probabilities_path(folder, case)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(os.path.join(self.path, PROBABILITIES_GROUP), target)
        os.rename(self.path, self.final_path)


def write_tiff_planes(label_image: str, planes_folder: str, case_id: str) -> None:
    """One TIFF per z plane of the full-resolution labels (``<case>_z00000.tif`` …), read a few planes at a time;
    written into ``<folder>.partial`` and renamed when complete."""
    import tifffile
    import zarr

    labels = zarr.open_array(os.path.join(label_image, "0"), mode="r")
    partial = planes_folder + PARTIAL_SUFFIX
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    plane_bytes = int(np.prod(labels.shape[1:])) * labels.dtype.itemsize
    step = max(1, min(labels.chunks[0], (256 * 1024**2) // max(plane_bytes, 1)))
    digits = max(5, len(str(labels.shape[0])))
    for z0 in range(0, labels.shape[0], step):
        slab = labels[z0:z0 + step]
        for i, plane in enumerate(slab):
            tifffile.imwrite(os.path.join(partial, f"{case_id}_z{z0 + i:0{digits}d}.tif"), plane,
                             compression="zlib")
    os.rename(partial, planes_folder)
