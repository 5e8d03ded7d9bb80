"""Which blocks hold no tissue: the tissue grid of pretraining, with its threshold found before the first block.

Pretraining's tissue grid (``nnssl.volumes.tissue_sampling``) averages ``CELL``^3 cells and splits
the cell means with Otsu's threshold. Prediction cannot see every cell before it starts, so the threshold
comes from cells (``CELL`` x ``CELL`` squares) of the evenly spaced plane bands that block-wise
preprocessing samples its statistics from, in the same read. Three changes make skipping safe where sampling
only had to be useful:

- the means are split on a log scale: light-sheet intensities are heavy-tailed, and on a linear scale a
  threshold separates bright structures from dim tissue rather than tissue from background;
- the threshold is the valley between the two modes of the histogram (scikit-image's ``threshold_minimum``),
  not Otsu's: with a tight background mode and a wide tissue mode Otsu's threshold falls inside the background
  (measured: 108 for background 100 +- 3), and most empty blocks would count as tissue;
- nothing is skipped unless the two classes are clearly apart (Otsu's effectiveness, the between-class share
  of the variance, at least ``MIN_SEPARATION``) or the histogram has one mode: a volume that is all tissue
  has no background to skip.

A block is skipped when no cell of everything it reads (halo included) lies above the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from nnssl.volumes.tissue_sampling import CELL, CoarseGrid

logger = logging.getLogger(__name__)

MIN_SEPARATION = 0.75  # Otsu's effectiveness below this: no clear background, nothing is skipped


def _log_means(means: np.ndarray, floor: float) -> np.ndarray:
    return np.log1p(np.maximum(means - floor, 0))


def band_cell_means(bands: Sequence[np.ndarray]) -> np.ndarray:
    """1D float64 means (channels averaged) of the ``CELL`` x ``CELL`` squares of one sampled band, given
    as one (1, rows, X) array per channel (``sample_voxels``' ``visit``)."""
    plane = np.mean([band[0].astype(np.float32) for band in bands], axis=0)
    rows, cols = plane.shape[0] // CELL * CELL, plane.shape[1] // CELL * CELL
    if not rows or not cols:
        return np.zeros(0)
    return plane[:rows, :cols].reshape(rows // CELL, CELL, cols // CELL, CELL).mean(axis=(1, 3)).ravel()


def otsu_separation(values: np.ndarray, threshold: float) -> float:
    """Between-class variance over total variance at ``threshold`` (1: two points, ~0.64: one Gaussian)."""
    low, high = values[values <= threshold], values[values > threshold]
    total = float(values.var())
    if total == 0 or not len(low) or not len(high):
        return 0.0
    w_low, w_high = len(low) / len(values), len(high) / len(values)
    return w_low * w_high * float(high.mean() - low.mean()) ** 2 / total


class TissueTest:
    """``has_tissue(block)``: whether a raw block (C, z, y, x) holds a cell above the background threshold."""

    def __init__(self, cell_means: np.ndarray) -> None:
        self.threshold: float | None = None  # on the raw scale; None: every block has tissue
        self.floor, self.separation = 0.0, 0.0
        if cell_means.size < 2 or np.ptp(cell_means) == 0:
            return
        from skimage.filters import threshold_minimum

        self.floor = min(0.0, float(cell_means.min()))  # log of the intensity itself (shifted if negative)
        logs = _log_means(cell_means, self.floor)
        try:
            log_threshold = float(threshold_minimum(logs))
        except RuntimeError:  # one mode only: no background
            return
        self.separation = otsu_separation(logs, log_threshold)
        if self.separation >= MIN_SEPARATION:
            self.threshold = self.floor + float(np.expm1(log_threshold))

    def describe(self) -> str:
        if self.threshold is None:
            return f"no clear background in the sampled planes (separation {self.separation:.2f}); nothing skipped"
        return f"background below {self.threshold:.4g} (separation {self.separation:.2f})"

    def has_tissue(self, raw: np.ndarray) -> bool:
        if self.threshold is None:
            return True
        block = raw.mean(axis=0, dtype=np.float32) if raw.shape[0] > 1 else raw[0]
        grid = CoarseGrid(block.shape, cell=CELL, stride=4)
        grid.add(block, (0, 0, 0))
        means = grid.means()
        return bool(np.nanmax(means) > self.threshold) if np.isfinite(means).any() else True
