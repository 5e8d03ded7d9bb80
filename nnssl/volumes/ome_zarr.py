"""Opens a Zarr / OME-Zarr image: the multiscale level closest to a target spacing, and its spacing.

Reads the NGFF ``multiscales`` metadata (v0.4 in ``.zattrs``, v0.5 under ``ome`` in ``zarr.json``) with
zarr itself: axes, per-level ``scale`` transformations (times a multiscale-wide one, if present).
A plain Zarr array (no OME metadata) is taken as is, its spacing coming from elsewhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)


@dataclass
class ZarrImage:
    """``array``: (Z, Y, X) or (C, Z, Y, X) zarr array (a leading time axis of size 1 dropped)."""

    array: object
    spacing: tuple[float, float, float] | None
    channel_axis: bool
    level: str = ""


class _FirstTimePoint:
    """A (1, ...) array seen without its time axis."""

    def __init__(self, array) -> None:
        self.array, self.shape, self.dtype = array, tuple(array.shape[1:]), array.dtype
        self.chunks = tuple(array.chunks[1:])

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        return self.array[(0, *index)]


def _multiscales(attrs: dict) -> list | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    return attrs.get("ome", {}).get("multiscales")


def _scale(transformations: list | None) -> list[float] | None:
    for t in transformations or []:
        if t.get("type") == "scale":
            return [float(s) for s in t["scale"]]
    return None


def level_spacings(multiscale: dict) -> list[tuple[str, list[float]]]:
    """(path, full-axis scale) of every level of one ``multiscales`` entry."""
    outer = _scale(multiscale.get("coordinateTransformations"))
    levels = []
    for dataset in multiscale["datasets"]:
        scale = _scale(dataset.get("coordinateTransformations")) or [1.0] * len(multiscale["axes"])
        if outer:
            scale = [a * b for a, b in zip(scale, outer)]
        levels.append((dataset["path"], scale))
    return levels


def choose_level(spacings: Sequence[Sequence[float]], target: Sequence[float] | None) -> int:
    """Index of the level whose (z, y, x) spacing is closest to ``target`` (largest per-axis log ratio);
    the finest level when there is no target; ties go to the finer level."""
    if target is None:
        return 0
    errors = [max(abs(math.log(s / t)) for s, t in zip(spacing, target)) for spacing in spacings]
    return min(range(len(errors)), key=lambda i: (round(errors[i], 9), i))


def _axes(path: str, multiscale: dict) -> list[str]:
    names = [a["name"] if isinstance(a, dict) else a for a in multiscale["axes"]]
    space = [n for n, a in zip(names, multiscale["axes"]) if isinstance(a, dict) and a.get("type") == "space"]
    if len(space) not in (0, 3) or names[-3:] != (space or names[-3:]) or len(names) - 3 > 2:
        raise NnsslError(f"{path}: OME-Zarr axes {names} are not [t,][c,]z,y,x; nnssl reads 3D images")
    return names


def open_image(path: str, target_spacing: Sequence[float] | None = None) -> ZarrImage:
    """The image at ``path`` (a Zarr array or an OME-Zarr multiscale group)."""
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as e:
        raise NnsslError(f"{path}: cannot open this Zarr ({e}); check the path or re-export it") from e
    if isinstance(node, zarr.Array):
        if node.ndim not in (3, 4):
            raise NnsslError(f"{path}: Zarr array of shape {list(node.shape)} is not (z, y, x) or (c, z, y, x)")
        return ZarrImage(node, None, node.ndim == 4)
    multiscales = _multiscales(dict(node.attrs))
    if not multiscales:
        raise NnsslError(f"{path}: Zarr group without OME 'multiscales' metadata; point -i at the image or array")
    multiscale = multiscales[0]
    names = _axes(path, multiscale)
    levels = level_spacings(multiscale)
    index = choose_level([scale[-3:] for _, scale in levels], target_spacing)
    level_path, scale = levels[index]
    array = node[level_path]
    if "t" in names:
        if array.shape[names.index("t")] != 1:
            raise NnsslError(f"{path}: time series of {array.shape[0]} points; export one time point per image")
        array = _FirstTimePoint(array)
    if index:
        logger.info("%s: using multiscale level '%s' (spacing %s) for target spacing %s", path, level_path,
                    scale[-3:], list(target_spacing))
    return ZarrImage(array, tuple(scale[-3:]), "c" in names, level_path)
