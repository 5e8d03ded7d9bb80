"""nnU-Net's dataset fingerprint for images without labels.

nnU-Net's own extractor needs label files and samples intensities under the labels. Without labels
the foreground is the image's nonzero region (nnU-Net's ``crop_to_nonzero`` mask), analysed with
nnU-Net's own ``collect_foreground_intensities``; no fake label files are written or read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import save_json
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

logger = logging.getLogger(__name__)

FOREGROUND_SAMPLES_TOTAL = 10_000_000  # nnU-Net's num_foreground_voxels_for_intensitystats


def analyze_unlabeled_case(data: np.ndarray, spacing, num_samples: int) -> dict:
    """Fingerprint entries of one case; ``data`` is (C, Z, Y, X)."""
    cropped, nonzero_seg, _ = crop_to_nonzero(data)
    foreground = (nonzero_seg == 0).astype(np.uint8)  # crop_to_nonzero marks outside with -1
    intensities, _ = DatasetFingerprintExtractor.collect_foreground_intensities(
        foreground, cropped, num_samples=num_samples
    )
    return {
        "shape_after_crop": tuple(int(s) for s in cropped.shape[1:]),
        "spacing": [float(s) for s in spacing],
        "intensities": intensities,
        "relative_size_after_cropping": float(np.prod(cropped.shape[1:]) / np.prod(data.shape[1:])),
    }


def analyze_sample(samples: list[np.ndarray], shape, spacing, num_samples: int, seed: int = 1234) -> dict:
    """Fingerprint entries of a volume too large to read whole, from a voxel sample of each channel.

    The nonzero voxels of the sample stand for the foreground; the volume is not cropped.
    """
    rng = np.random.default_rng(seed)
    intensities = []
    for sample in samples:
        foreground = sample[sample != 0]
        if len(foreground) > num_samples:
            foreground = rng.choice(foreground, num_samples, replace=False)
        intensities.append(foreground.astype(np.float32))
    return {
        "shape_after_crop": tuple(int(s) for s in shape),
        "spacing": [float(s) for s in spacing],
        "intensities": intensities,
        "relative_size_after_cropping": 1.0,
    }


def _channel_statistics(values: np.ndarray) -> dict:
    p00_5, median, p99_5 = np.percentile(values, (0.5, 50.0, 99.5))
    return {
        "mean": float(np.mean(values)), "median": float(median), "std": float(np.std(values)),
        "min": float(np.min(values)), "max": float(np.max(values)),
        "percentile_99_5": float(p99_5), "percentile_00_5": float(p00_5),
    }


def extract_fingerprint(
    case_ids: list[str],
    load_case: Callable[[str], tuple[np.ndarray, dict]],
    num_channels: int,
    output_file: str,
    sample_large_case: Callable[[str, int], dict] | None = None,
    large_cases: frozenset[str] = frozenset(),
) -> dict:
    """Writes nnU-Net's ``dataset_fingerprint.json`` for ``case_ids`` (read with ``load_case``).

    Cases in ``large_cases`` are not read whole: ``sample_large_case(case_id, num_samples)`` gives their
    entries (see ``analyze_sample``).
    """
    samples_per_case = int(FOREGROUND_SAMPLES_TOTAL // max(1, len(case_ids)))
    results = []
    for case_id in case_ids:
        if case_id in large_cases:
            results.append(sample_large_case(case_id, samples_per_case))
            continue
        data, properties = load_case(case_id)
        results.append(analyze_unlabeled_case(data, properties["spacing"], samples_per_case))
    per_channel = [
        np.concatenate([np.asarray(r["intensities"][c], dtype=np.float64) for r in results])
        for c in range(num_channels)
    ]
    fingerprint = {
        "spacings": [r["spacing"] for r in results],
        "shapes_after_crop": [r["shape_after_crop"] for r in results],
        "foreground_intensity_properties_per_channel": {
            str(c): _channel_statistics(per_channel[c]) for c in range(num_channels)
        },
        "median_relative_size_after_cropping": float(np.median([r["relative_size_after_cropping"] for r in results])),
    }
    save_json(fingerprint, output_file)
    return fingerprint
