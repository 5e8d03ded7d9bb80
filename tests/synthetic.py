"""Synthetic light-sheet-like 3D volumes with known labels: the tests' datasets (never shipped).

A volume holds bright nucleus-like ellipsoids ("blobs") and/or vessel-like curved tubes
("tubes") on a dark background. The objects are blurred with an anisotropic Gaussian point
spread function (elongated along z, as in light-sheet microscopy), put on a background offset
and sampled with Poisson noise, then stored as uint16. The label is the set of objects before
the blur (0 background, 1 structure). Everything is deterministic from the seed.

Arrays are in (Z, Y, X) order; the voxel spacing is anisotropic (z 2.0 µm, y/x 1.0 µm by
default). SimpleITK files get the spacing in (x, y, z) order, as SimpleITK expects; 3D TIFF
files get a sidecar ``CASE.json`` ``{"spacing": [z, y, x]}`` as nnU-Net's Tiff3DIO reads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from nnssl.demo.synthetic import DEFAULT_SPACING, PSF_SIGMA_UM, tube_centerline, write_image

logger = logging.getLogger(__name__)

BACKGROUND_OFFSET = 100.0
SIGNAL_AMPLITUDE = 600.0
KINDS = ("blobs", "tubes", "mixed")


def _ellipsoid_mask(
    shape: tuple[int, int, int], rng: np.random.Generator, spacing: Sequence[float]
) -> np.ndarray:
    """One random ellipsoid (radii 3-6 µm) as a boolean (Z, Y, X) mask."""
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    center = [rng.uniform(0, s) for s in shape]
    radii_um = rng.uniform(3.0, 6.0, size=3)
    dist = sum(
        ((grid - c) * sp / r) ** 2 for grid, c, sp, r in zip((zz, yy, xx), center, spacing, radii_um)
    )
    return dist <= 1.0


def _add_blobs(
    objects: np.ndarray, rng: np.random.Generator, spacing: Sequence[float], count: int
) -> None:
    """Adds ``count`` ellipsoids with random brightness (0.5-1.0) to ``objects`` (in place)."""
    for _ in range(count):
        mask = _ellipsoid_mask(objects.shape, rng, spacing)
        objects[mask] = np.maximum(objects[mask], rng.uniform(0.5, 1.0))


def _add_tubes(
    objects: np.ndarray, rng: np.random.Generator, spacing: Sequence[float], count: int
) -> None:
    """Adds ``count`` curved tubes (radius 1-2 µm) with random brightness to ``objects`` (in place)."""
    shape = objects.shape
    steps = 2 * int(sum(shape))
    for _ in range(count):
        points = np.round(tube_centerline(shape, rng, steps)).astype(int)
        inside = np.all((points >= 0) & (points < np.array(shape)), axis=1)
        line = np.zeros(shape, dtype=bool)
        line[tuple(points[inside].T)] = True
        if not line.any():
            continue
        dist = ndimage.distance_transform_edt(~line, sampling=spacing)
        mask = dist <= rng.uniform(1.0, 2.0)
        objects[mask] = np.maximum(objects[mask], rng.uniform(0.6, 1.0))


def _render(
    objects: np.ndarray, rng: np.random.Generator, spacing: Sequence[float]
) -> np.ndarray:
    """Blur (anisotropic PSF), background offset + smooth gradient, Poisson noise -> uint16."""
    sigma_vox = [s / sp for s, sp in zip(PSF_SIGMA_UM, spacing)]
    blurred = ndimage.gaussian_filter(objects.astype(np.float32), sigma=sigma_vox)
    gradient = np.linspace(0.8, 1.2, objects.shape[2], dtype=np.float32)[None, None, :]
    expected = BACKGROUND_OFFSET * gradient + SIGNAL_AMPLITUDE * blurred
    noisy = rng.poisson(np.maximum(expected, 0.0))
    return np.clip(noisy, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def make_volume(
    shape: tuple[int, int, int] = (32, 64, 64),
    seed: int = 0,
    kind: str = "mixed",
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic light-sheet-like volume and its label.

    Args:
        shape: (Z, Y, X) size in voxels.
        seed: random seed; the same seed gives the same volume.
        kind: ``'blobs'`` (nuclei-like ellipsoids), ``'tubes'`` (vessel-like tubes) or ``'mixed'``.
        spacing: voxel spacing in µm, (z, y, x).

    Returns:
        ``(image, label)``: image (Z, Y, X) uint16, label (Z, Y, X) uint8 with 0 background and
        1 structure (the objects before the blur). The label is never empty.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(shape) != 3:
        raise ValueError(f"shape must be (Z, Y, X), got {shape}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    objects = np.zeros(shape, dtype=np.float32)
    volume_um3 = float(np.prod(shape) * np.prod(spacing))
    if kind in ("blobs", "mixed"):
        _add_blobs(objects, rng, spacing, count=max(2, int(volume_um3 / 3000)))
    if kind in ("tubes", "mixed"):
        _add_tubes(objects, rng, spacing, count=max(1, int(volume_um3 / 40000)))
    if not objects.any():  # extremely unlikely; keep the label non-empty
        objects[tuple(s // 2 for s in shape)] = 1.0
    image = _render(objects, rng, spacing)
    return image, (objects > 0).astype(np.uint8)


def _second_channel(image: np.ndarray, seed: int) -> np.ndarray:
    """A second channel of the same structures: dimmer, with its own noise."""
    rng = np.random.default_rng(seed + 7919)
    signal = np.maximum(image.astype(np.float32) - BACKGROUND_OFFSET, 0) * 0.5
    return np.clip(rng.poisson(signal + 80.0), 0, 65535).astype(np.uint16)


def _volume_channels(
    shape: tuple[int, int, int], seed: int, num_channels: int, spacing: Sequence[float]
) -> tuple[list[np.ndarray], np.ndarray]:
    """``num_channels`` images (Z, Y, X) uint16 of one case and its label."""
    if num_channels not in (1, 2):
        raise ValueError(f"num_channels must be 1 or 2, got {num_channels}")
    image, label = make_volume(shape, seed=seed, kind="mixed", spacing=spacing)
    channels = [image] if num_channels == 1 else [image, _second_channel(image, seed)]
    return channels, label


def _write_case(
    folder: str,
    case: str,
    channels: list[np.ndarray],
    file_ending: str,
    spacing: Sequence[float],
    naming: str = "nnunet",
) -> list[str]:
    """Writes the channels of one case; returns the image files."""
    sidecar = os.path.join(folder, case + ".json")
    if naming == "plain":
        if len(channels) != 1:
            raise ValueError("naming='plain' holds one channel per file; use naming='nnunet'")
        files = [os.path.join(folder, case + file_ending)]
    else:
        files = [os.path.join(folder, f"{case}_{c:04d}{file_ending}") for c in range(len(channels))]
    for array, path in zip(channels, files):
        write_image(array, path, spacing, sidecar_json=sidecar)
    return files


def write_labeled_dataset(
    nnunet_raw: str,
    dataset_id: int = 501,
    name: str = "SyntheticLSM",
    num_cases: int = 6,
    shape: tuple[int, int, int] = (32, 64, 64),
    seed: int = 0,
    file_ending: str = ".nii.gz",
    num_channels: int = 1,
    num_test_cases: int = 2,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> str:
    """Writes a standard nnU-Net raw dataset ``nnunet_raw/Dataset{ID:03d}_{name}``.

    ``imagesTr/CASE_XXXX{ending}`` + ``labelsTr/CASE{ending}`` (``num_cases`` cases), the
    held-out ``imagesTs/`` + ``labelsTs/`` (``num_test_cases`` cases, for Dice evaluation) and
    ``dataset.json`` (channel names ``LSM`` [+ ``LSM2``], labels background/structure).
    Volumes are (Z, Y, X) = ``shape``; case ``i`` uses seed ``seed + i``, test case ``j`` seed
    ``seed + 10000 + j``. Returns the dataset folder.
    """
    dataset_folder = os.path.join(nnunet_raw, f"Dataset{int(dataset_id):03d}_{name}")
    splits = {"Tr": [(f"{name}_{i:03d}", seed + i) for i in range(num_cases)]}
    splits["Ts"] = [(f"{name}_test_{j:03d}", seed + 10000 + j) for j in range(num_test_cases)]
    for suffix, cases in splits.items():
        images_dir = os.path.join(dataset_folder, "images" + suffix)
        labels_dir = os.path.join(dataset_folder, "labels" + suffix)
        os.makedirs(images_dir, exist_ok=True)
        os.makedirs(labels_dir, exist_ok=True)
        for case, case_seed in cases:
            channels, label = _volume_channels(shape, case_seed, num_channels, spacing)
            _write_case(images_dir, case, channels, file_ending, spacing)
            write_image(label, os.path.join(labels_dir, case + file_ending), spacing)
    channel_names = {"0": "LSM"} if num_channels == 1 else {"0": "LSM", "1": "LSM2"}
    dataset_json = {
        "channel_names": channel_names,
        "labels": {"background": 0, "structure": 1},
        "numTraining": num_cases,
        "file_ending": file_ending,
        "name": name,
        "description": "Synthetic light-sheet-like volumes (tests/synthetic.py)",
    }
    with open(os.path.join(dataset_folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    logger.info("wrote %s (%d train, %d test cases)", dataset_folder, num_cases, num_test_cases)
    return dataset_folder


def write_unlabeled_folder(
    folder: str,
    num_cases: int = 8,
    shape: tuple[int, int, int] = (32, 64, 64),
    seed: int = 100,
    file_ending: str = ".nii.gz",
    naming: str = "nnunet",
    num_channels: int = 1,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> list[str]:
    """Writes ``num_cases`` unlabeled (Z, Y, X) volumes into ``folder``; returns the image files.

    ``naming='nnunet'``: ``lsm_XXX_0000{ending}`` (one file per channel); ``naming='plain'``:
    ``lsm_XXX{ending}`` (one channel). TIFF endings get a sidecar ``lsm_XXX.json``
    ``{"spacing": [z, y, x]}``. Case ``i`` uses seed ``seed + i``.
    """
    if naming not in ("nnunet", "plain"):
        raise ValueError(f"naming must be 'nnunet' or 'plain', got {naming!r}")
    os.makedirs(folder, exist_ok=True)
    files: list[str] = []
    for i in range(num_cases):
        channels, _ = _volume_channels(shape, seed + i, num_channels, spacing)
        files.extend(_write_case(folder, f"lsm_{i:03d}", channels, file_ending, spacing, naming))
    logger.info("wrote %d unlabeled volumes to %s", num_cases, folder)
    return files
