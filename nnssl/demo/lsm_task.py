"""The light-sheet-like segmentation task of the demo and of the low-label benchmark: two structures that
scratch training does not solve in a few dozen steps.

Each volume holds clustered, touching nucleus-like ellipsoids with chromatin texture (label 1) and thin,
dim vessel-like tubes (label 2), plus unlabelled punctate debris, seen through an anisotropic PSF under
uneven illumination (smooth field, light-sheet attenuation along x, stripe shadows) at low signal-to-noise
(Poisson + read noise). Volumes differ from each other as light-sheet acquisitions do (``Acquisition``:
brightness, hence signal-to-noise, PSF width, haze, nucleus size and vessel calibre), so a single labelled
volume does not show the range that held-out volumes span: more labelled volumes, or pretraining on many
unlabeled ones, must supply it. A volume is a pure function of its shape and seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnssl.demo.synthetic import DEFAULT_SPACING, PSF_SIGMA_UM, tube_centerline, write_image

STRUCTURES = {1: "nuclei", 2: "vessels"}

BACKGROUND = 100.0
AMPLITUDE = 220.0
READ_NOISE_SD = 4.0


def _ellipsoid_at(
    shape: tuple[int, ...], center: np.ndarray, radii_um: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """Boolean (Z, Y, X) mask of an axis-aligned ellipsoid (centre in voxels, radii in µm)."""
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    grids = (zz, yy, xx)
    return sum(((g - c) * sp / r) ** 2 for g, c, sp, r in zip(grids, center, spacing, radii_um)) <= 1.0


@dataclass(frozen=True)
class Acquisition:
    """What varies from one volume to the next (drawn per volume from its seed)."""

    amplitude: float  # photons at full brightness: sets the signal-to-noise
    psf_scale: float  # PSF width relative to PSF_SIGMA_UM
    haze: float  # out-of-focus light relative to the in-focus signal
    nucleus_scale: float  # nucleus radii relative to 2.5-5 µm
    vessel_radius_um: tuple[float, float]

    @staticmethod
    def draw(rng: np.random.Generator) -> Acquisition:
        thick = rng.uniform(0.9, 1.6)
        return Acquisition(amplitude=AMPLITUDE * rng.uniform(0.3, 1.3), psf_scale=rng.uniform(0.8, 1.6),
                           haze=rng.uniform(0.2, 0.9), nucleus_scale=rng.uniform(0.7, 1.4),
                           vessel_radius_um=(thick, thick + 0.6))


def _add_nuclei(nuclei: np.ndarray, rng: np.random.Generator, spacing: Sequence[float], scale: float) -> None:
    """Clusters of 2-4 touching ellipsoids (radii ``scale`` x 2.5-5 µm), brightness 0.3-1.0, in place."""
    shape = nuclei.shape
    volume_um3 = float(np.prod(shape) * np.prod(spacing))
    for _ in range(max(1, int(volume_um3 / (9000 * scale**3)))):
        center = np.array([rng.uniform(0, s) for s in shape], dtype=float)
        for _ in range(int(rng.integers(2, 5))):
            radii_um = scale * rng.uniform(2.5, 5.0, size=3)
            mask = _ellipsoid_at(shape, center, radii_um, spacing)
            nuclei[mask] = np.maximum(nuclei[mask], rng.uniform(0.3, 1.0))
            step_um = rng.normal(size=3)
            step_um *= (float(radii_um.mean()) + scale * rng.uniform(2.0, 4.0)) / np.linalg.norm(step_um)
            center = center + step_um / np.asarray(spacing)  # next nucleus touches this one


def _add_vessels(vessels: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                 radius_um: tuple[float, float]) -> None:
    """Thin curved tubes (radius in ``radius_um``), brightness 0.3-0.7, in place."""
    shape = vessels.shape
    volume_um3 = float(np.prod(shape) * np.prod(spacing))
    for _ in range(max(2, int(volume_um3 / 25000))):
        points = np.round(tube_centerline(shape, rng, 3 * int(sum(shape)))).astype(int)
        inside = np.all((points >= 0) & (points < np.array(shape)), axis=1)
        line = np.zeros(shape, dtype=bool)
        line[tuple(points[inside].T)] = True
        if not line.any():
            continue
        mask = ndimage.distance_transform_edt(~line, sampling=spacing) <= rng.uniform(*radius_um)
        vessels[mask] = np.maximum(vessels[mask], rng.uniform(0.3, 0.7))


def _illumination(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth field x light-sheet attenuation along x x stripe shadows, roughly 0.25-1.2."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=[s / 4 for s in shape])
    field = 0.55 + 0.45 * (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    x = np.linspace(0.0, 1.0, shape[2])[None, None, :]
    attenuation = np.exp(-rng.uniform(0.5, 1.2) * (x if rng.random() < 0.5 else 1.0 - x))
    stripes = ndimage.gaussian_filter(rng.random(size=(shape[0], shape[1], 1)), sigma=(1.0, 1.5, 0))
    stripes = 1.0 - 0.5 * np.clip((stripes - stripes.mean()) * 6.0, 0.0, 1.0)
    return (field * attenuation * stripes).astype(np.float32)


def make_task_volume(
    shape: tuple[int, int, int], seed: int, spacing: Sequence[float] = DEFAULT_SPACING
) -> tuple[np.ndarray, np.ndarray]:
    """One volume of the task: (image (Z, Y, X) uint16, label uint8: 0 background, 1 nuclei, 2 vessels)."""
    rng = np.random.default_rng(seed)
    acquisition = Acquisition.draw(rng)
    nuclei = np.zeros(shape, dtype=np.float32)
    vessels = np.zeros(shape, dtype=np.float32)
    _add_nuclei(nuclei, rng, spacing, acquisition.nucleus_scale)
    _add_vessels(vessels, rng, spacing, acquisition.vessel_radius_um)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), sigma=1.0)
    texture = 0.75 + 0.25 * np.tanh(texture / max(float(texture.std()), 1e-6))
    debris = np.zeros(shape, dtype=np.float32)
    points = tuple(rng.integers(0, s, size=max(4, int(np.prod(shape) / 4000))) for s in shape)
    debris[points] = rng.uniform(2.0, 6.0, size=points[0].size)
    objects = np.maximum(nuclei * texture, vessels) + debris
    sigma_vox = [acquisition.psf_scale * s / sp for s, sp in zip(PSF_SIGMA_UM, spacing)]
    blurred = ndimage.gaussian_filter(objects, sigma=sigma_vox)
    haze = ndimage.gaussian_filter(objects, sigma=[4 * s for s in sigma_vox])
    signal = blurred + acquisition.haze * haze
    expected = BACKGROUND + acquisition.amplitude * _illumination(shape, rng) * signal
    image = rng.poisson(np.maximum(expected, 0.0)) + rng.normal(0.0, READ_NOISE_SD, size=shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[nuclei > 0] = 1
    label[vessels > 0] = 2
    return np.clip(image, 0, 65535).astype(np.uint16), label


def write_task_cases(folder: str, split: str, cases: Sequence[tuple[str, int]], shape: tuple[int, int, int]) -> None:
    """Writes ``images<split>/<case>_0000.nii.gz`` and ``labels<split>/<case>.nii.gz`` of an nnU-Net raw
    dataset folder, one volume per (case name, seed)."""
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(folder, sub + split), exist_ok=True)
    for case, seed in cases:
        image, label = make_task_volume(shape, seed)
        write_image(image, os.path.join(folder, "images" + split, case + "_0000.nii.gz"))
        write_image(label, os.path.join(folder, "labels" + split, case + ".nii.gz"))


def write_dataset_json(folder: str, name: str, num_training: int, description: str) -> None:
    """nnU-Net's dataset.json of a task dataset (one channel, labels background, nuclei, vessels)."""
    dataset_json = {"channel_names": {"0": "LSM"}, "labels": {"background": 0, **{v: k for k, v in STRUCTURES.items()}},
                    "numTraining": num_training, "file_ending": ".nii.gz", "name": name, "description": description}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
