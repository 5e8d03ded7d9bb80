"""What the demo's synthetic light-sheet-like volumes share (``nnssl.demo.lsm_task``): the anisotropic voxel
spacing and point spread function of light-sheet microscopy, curved tube centre lines, and a writer that
stores a (Z, Y, X) array with its spacing.

SimpleITK files get the spacing in (x, y, z) order, as SimpleITK expects; 3D TIFF files get a sidecar
``CASE.json`` ``{"spacing": [z, y, x]}`` as nnU-Net's Tiff3DIO reads it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

#: Voxel spacing in µm, (z, y, x) order.
DEFAULT_SPACING: tuple[float, float, float] = (2.0, 1.0, 1.0)
#: Standard deviation of the point spread function in µm, (z, y, x) order.
PSF_SIGMA_UM: tuple[float, float, float] = (2.0, 0.7, 0.7)


def tube_centerline(shape: tuple[int, int, int], rng: np.random.Generator, steps: int) -> np.ndarray:
    """Points (N, 3) of a smooth random walk that starts inside the volume."""
    pos = np.array([rng.uniform(0, s) for s in shape])
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    points = []
    for _ in range(steps):
        points.append(pos.copy())
        direction = direction + 0.25 * rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        pos = pos + 0.5 * direction
    return np.asarray(points)


def write_image(
    array: np.ndarray,
    path: str,
    spacing: Sequence[float] = DEFAULT_SPACING,
    sidecar_json: str | None = None,
) -> None:
    """Writes a (Z, Y, X) array: SimpleITK formats by ending, ``.tif``/``.tiff`` as 3D TIFF.

    ``spacing`` is (z, y, x). A TIFF gets the sidecar ``sidecar_json`` (default: ``path`` with
    ``.json`` instead of its ending) holding ``{"spacing": [z, y, x]}``.
    """
    if path.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(path, array)
        sidecar_json = sidecar_json or path[: path.rfind(".")] + ".json"
        with open(sidecar_json, "w") as f:
            json.dump({"spacing": [float(s) for s in spacing]}, f)
        return
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing[::-1]])  # SimpleITK: (x, y, z)
    sitk.WriteImage(img, path, useCompression=True)
