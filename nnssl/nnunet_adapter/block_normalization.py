"""nnU-Net's intensity normalization applied block by block, with per-image statistics from a sample.

nnU-Net normalizes a whole image in memory. Schemes that only use dataset-wide numbers (CT, none,
RGB /255) are block-local: nnU-Net's own class runs on each block. Schemes that use the image's own
statistics (z-score, rescale to [0, 1]) get them from a voxel sample of the image (evenly spaced
planes) instead of the whole volume; the formula is nnU-Net's.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    RescaleTo01Normalization,
    ZScoreNormalization,
)
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from nnssl.errors import NnsslError

BlockNormalizer = Callable[[np.ndarray, np.ndarray], None]  # (raw block, float32 output of its shape)


def _zscore(sample: np.ndarray, use_mask: bool) -> BlockNormalizer:
    values = sample[sample != 0] if use_mask else sample
    if values.size == 0:
        raise NnsslError("the intensity sample holds no nonzero voxel; the image looks empty")
    mean, std = float(values.mean()), max(float(values.std()), 1e-8)

    def normalize(raw: np.ndarray, out: np.ndarray) -> None:
        if use_mask:  # nnU-Net leaves voxels outside the nonzero mask at zero
            out[...] = np.where(raw != 0, (raw.astype(np.float32) - mean) / std, 0)
            return
        np.subtract(raw, mean, out=out, dtype=np.float32, casting="unsafe")  # cast and shift in one pass
        out /= std

    return normalize


def _rescale01(sample: np.ndarray) -> BlockNormalizer:
    low, high = float(sample.min()), float(sample.max())

    def normalize(raw: np.ndarray, out: np.ndarray) -> None:
        np.subtract(raw, low, out=out, dtype=np.float32, casting="unsafe")
        out /= max(high - low, 1e-8)

    return normalize


def _block_local(instance) -> BlockNormalizer:
    def normalize(raw: np.ndarray, out: np.ndarray) -> None:
        out[...] = raw
        out[...] = instance.run(out, None)

    return normalize


def _scheme_class(name: str):
    """The class behind a plans entry such as 'ZScoreNormalization', found as nnU-Net's preprocessor does."""
    import nnunetv2

    folder = os.path.join(nnunetv2.__path__[0], "preprocessing", "normalization")
    return recursive_find_python_class(folder, name, "nnunetv2.preprocessing.normalization")


def block_normalizers(normalization_schemes: list[str], use_mask_for_norm: list[bool],
                      intensity_properties: dict, samples: list[np.ndarray]) -> list[BlockNormalizer]:
    """One normalizer per channel: ``normalize(raw, out)`` writes the normalized float32 (z, y, x) block.

    ``samples[c]``: 1D float sample of channel c's voxels (raw intensities).
    """
    normalizers = []
    for c, scheme_name in enumerate(normalization_schemes):
        scheme = _scheme_class(scheme_name)
        if scheme is None:
            raise NnsslError(f"normalization scheme '{scheme_name}' of the plans is unknown to nnU-Net")
        if issubclass(scheme, ZScoreNormalization):
            normalizers.append(_zscore(samples[c], bool(use_mask_for_norm[c])))
        elif issubclass(scheme, RescaleTo01Normalization):
            normalizers.append(_rescale01(samples[c]))
        else:  # CT, NoNormalization, RGBTo01: dataset-wide numbers only, exact per block
            instance = scheme(use_mask_for_norm=False, intensityproperties=intensity_properties[str(c)])
            normalizers.append(_block_local(instance))
    return normalizers
