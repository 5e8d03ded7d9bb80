"""Test and benchmark fixtures (never shipped). Writes light-sheet-style files block by block, never holding
the volume: compressed BigTIFF stacks, folders of 2D TIFF planes and OME-Zarr (NGFF 0.4) multiscale images;
places patches as nnU-Net's loader would (``sample_patch_boxes``).

``make_slab(z0, z1)`` returns the (z1 - z0, Y, X) voxels of planes z0..z1 of the volume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

SlabMaker = Callable[[int, int], np.ndarray]


def _planes(shape: Sequence[int], make_slab: SlabMaker, slab: int) -> Iterator[np.ndarray]:
    for z0 in range(0, shape[0], slab):
        yield from make_slab(z0, min(z0 + slab, shape[0]))


def write_bigtiff(path: str, shape: Sequence[int], dtype, make_slab: SlabMaker, spacing: Sequence[float],
                  slab: int = 16, compression: str = "zlib", rows_per_strip: int = 64) -> None:
    """A compressed BigTIFF stack (one page per z, strips of ``rows_per_strip`` rows) and its spacing
    sidecar ``<name>.json``."""
    import tifffile

    tifffile.imwrite(path, _planes(shape, make_slab, slab), shape=tuple(shape), dtype=dtype, bigtiff=True,
                     compression=compression, rowsperstrip=rows_per_strip, photometric="minisblack")
    _write_sidecar(path, (".tiff", ".tif"), spacing)


def write_plane_folder(folder: str, shape: Sequence[int], make_slab: SlabMaker, spacing: Sequence[float],
                       slab: int = 16) -> None:
    """One 2D TIFF per z (``z0000.tif`` ...) and the spacing sidecar ``<folder>.json`` next to the folder."""
    import tifffile

    os.makedirs(folder, exist_ok=True)
    for z, plane in enumerate(_planes(shape, make_slab, slab)):
        tifffile.imwrite(os.path.join(folder, f"z{z:04d}.tif"), plane, photometric="minisblack")
    _write_sidecar(folder.rstrip("/"), ("",), spacing)


def _write_sidecar(path: str, endings: Sequence[str], spacing: Sequence[float]) -> None:
    stem = next((path[: -len(e)] for e in endings if e and path.endswith(e)), path)
    with open(stem + ".json", "w") as f:
        json.dump({"spacing": [float(s) for s in spacing]}, f)


def _downsample2(block: np.ndarray) -> np.ndarray:
    """2x2x2 mean of a (z, y, x) block with even z (odd y/x edges dropped)."""
    z, y, x = (s // 2 * 2 for s in block.shape)
    view = block[:z, :y, :x].astype(np.float32).reshape(z // 2, 2, y // 2, 2, x // 2, 2)
    return view.mean(axis=(1, 3, 5)).astype(block.dtype)


def write_ome_zarr(path: str, shape: Sequence[int], dtype, make_slab: SlabMaker, spacing: Sequence[float],
                   levels: int = 2, chunks: Sequence[int] = (64, 256, 256), slab: int = 64) -> None:
    """An OME-Zarr (NGFF 0.4, Zarr format 2, blosc zstd) image with ``levels`` 2x-downsampled levels."""
    import zarr
    from numcodecs import Blosc

    root = zarr.open_group(path, mode="w", zarr_format=2)
    compressor = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)
    arrays, datasets = [], []
    for level in range(levels):
        level_shape = [s // 2**level for s in shape]
        arrays.append(root.create_array(str(level), shape=level_shape, chunks=[min(c, s) for c, s in
                                                                              zip(chunks, level_shape)],
                                        dtype=dtype, compressors=compressor))
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) * 2**level for s in spacing]}]})
    slab = max(2**levels, slab // 2**levels * 2**levels)
    for z0 in range(0, shape[0], slab):
        block = make_slab(z0, min(z0 + slab, shape[0]))
        for level, array in enumerate(arrays):
            start = z0 // 2**level
            array[start:start + block.shape[0]] = block[:, : array.shape[1], : array.shape[2]]
            block = _downsample2(block)
    root.attrs["multiscales"] = [{
        "version": "0.4", "name": os.path.basename(path),
        "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
        "datasets": datasets,
    }]


def lsm_like_slab(shape: Sequence[int], seed: int = 0, tissue_radius: float = 0.3,
                  background: int = 100) -> SlabMaker:
    """Slabs of a synthetic cleared-tissue volume: a bright ellipsoid 'organ' of textured tissue with
    nuclei-like speckle, centred in a flat dark background (exactly ``background``, so it compresses).

    ``tissue_radius``: the organ's semi-axes as a fraction of each extent (0.3 leaves ~89% background).
    """
    tissue = tissue_mask_slab(shape, tissue_radius)

    def make_slab(z0: int, z1: int) -> np.ndarray:
        rng = np.random.default_rng(seed + z0)
        inside = tissue(z0, z1)
        out = np.full((z1 - z0, shape[1], shape[2]), background, np.uint16)
        count = int(inside.sum())
        if count:
            out[inside] = (background + 400 + rng.gamma(2.0, 150.0, count)).astype(np.uint16)
        return out

    return make_slab


def tissue_mask_slab(shape: Sequence[int], tissue_radius: float = 0.3) -> Callable[..., np.ndarray]:
    """The ground-truth tissue mask of ``lsm_like_slab``: ``mask(z0, z1, y0=0, y1=Y, x0=0, x1=X)`` (bool)."""
    centre = np.array(shape, np.float32) / 2
    radii = np.array(shape, np.float32) * tissue_radius

    def mask(z0: int, z1: int, y0: int = 0, y1: int | None = None, x0: int = 0, x1: int | None = None) -> np.ndarray:
        y1, x1 = shape[1] if y1 is None else y1, shape[2] if x1 is None else x1
        z = ((np.arange(z0, z1, dtype=np.float32) - centre[0]) / radii[0])[:, None, None] ** 2
        y = ((np.arange(y0, y1, dtype=np.float32) - centre[1]) / radii[1])[None, :, None] ** 2
        x = ((np.arange(x0, x1, dtype=np.float32) - centre[2]) / radii[2])[None, None, :] ** 2
        return (z + y + x) <= 1.0

    return mask


def sample_patch_boxes(folder: str, identifiers: list[str], patch_size: Sequence[int], plans: dict,
                       num_patches: int, random_fraction: float, seed: int = 0) -> list[tuple]:
    """(case, lower corner, upper corner) of ``num_patches`` patches as nnU-Net's loader places them
    (its own ``get_do_oversample`` and ``get_bbox``), without reading voxels."""
    from nnssl.nnunet_adapter.dataloading import patch_loader

    loader = patch_loader(folder, identifiers, 1, list(patch_size), list(patch_size), plans, None, random_fraction)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        boxes = []
        for _ in range(num_patches):
            case = identifiers[np.random.randint(len(identifiers))]
            data, _, _, properties = loader._data.load_case(case)
            force = loader.get_do_oversample(0)
            lower, upper = loader.get_bbox(data.shape[1:], force, properties["class_locations"])
            boxes.append((case, list(lower), list(upper)))
        return boxes
    finally:
        np.random.set_state(state)
