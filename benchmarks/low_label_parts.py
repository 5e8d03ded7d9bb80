"""Pieces of the low-label benchmark (``benchmarks/low_label.py``): the synthetic two-structure task, the
nnU-Net dataset with one split per labelled subset, the unlabeled pool, seeded fine-tuning and scoring (Dice per
structure, plus detection F1 for the nuclei and clDice for the vessels, from ``nnssl.evaluation``).

The task: light-sheet-like volumes holding clustered, touching nucleus-like ellipsoids with chromatin
texture (label 1) and thin, dim vessel-like tubes (label 2), plus unlabelled punctate debris, seen
through an anisotropic PSF under uneven illumination (smooth field, light-sheet attenuation along x,
stripe shadows) at low signal-to-noise (Poisson + read noise).

Volumes differ from each other as light-sheet acquisitions do (``Acquisition``: brightness, hence
signal-to-noise, PSF width, haze, nucleus size and vessel calibre), so a single labelled volume does not
show the range that held-out volumes span: more labelled volumes, or pretraining on many unlabeled ones,
must supply it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnssl.demo.evaluate import dice
from nnssl.demo.synthetic import DEFAULT_SPACING, PSF_SIGMA_UM, tube_centerline, write_image
from nnssl.evaluation.summary import nan_mean

DATASET_ID = 502
DATASET_NAME = "LowLabelLSM"
DATASET_FOLDER = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
CONFIGURATION = "3d_lowlabel"
TEST_SEED = 10000  # held-out test volumes (imagesTs): confirmation only
DEV_SEED = 30000  # development volumes (imagesDev): choosing recipes and settings
UNLABELED_SEED = 20000
STRUCTURES = {1: "nuclei", 2: "vessels"}
# beside Dice, each structure's own metric (nnssl.evaluation, as nnssl_evaluate computes it): detection F1 over
# connected components for the nuclei, centreline Dice for the vessels; recorded as "<structure>_<metric>"
SECOND_METRICS = {"nuclei": ("instances", "F1"), "vessels": ("cldice", "clDice")}
REAL_VOLUMES_SCRIPT = Path(__file__).resolve().parent / "get_real_volumes.sh"
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


def write_task_dataset(raw: str, num_pool: int, num_test: int, shape: tuple[int, int, int]) -> str:
    """nnU-Net raw dataset: ``num_pool`` labelled training cases (seeds 0..), ``num_test`` held-out test cases
    in imagesTs/labelsTs (seeds 10000..) and as many development cases in imagesDev/labelsDev (seeds
    30000.., never used for confirmation; nnU-Net ignores the folder). Returns the dataset folder."""
    folder = os.path.join(raw, DATASET_FOLDER)
    parts = {"Tr": [(f"case_{i:03d}", i) for i in range(num_pool)],
             "Ts": [(f"test_{j:03d}", TEST_SEED + j) for j in range(num_test)],
             "Dev": [(f"dev_{j:03d}", DEV_SEED + j) for j in range(num_test)]}
    for suffix, cases in parts.items():
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(folder, sub + suffix), exist_ok=True)
        for case, seed in cases:
            image, label = make_task_volume(shape, seed)
            write_image(image, os.path.join(folder, "images" + suffix, case + "_0000.nii.gz"))
            write_image(label, os.path.join(folder, "labels" + suffix, case + ".nii.gz"))
    dataset_json = {"channel_names": {"0": "LSM"}, "labels": {"background": 0, **{v: k for k, v in STRUCTURES.items()}},
                    "numTraining": num_pool, "file_ending": ".nii.gz", "name": DATASET_NAME,
                    "description": "Synthetic light-sheet-like low-label task (benchmarks/low_label_parts.py)"}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    return folder


def write_unlabeled_pool(folder: str, num_cases: int, shape: tuple[int, int, int], real_files: list[str]) -> int:
    """Synthetic task-like volumes (seeds ``UNLABELED_SEED``..) as TIFF + sidecar, plus copies of the real volumes.

    The real volumes keep their voxel grid: their sidecar gets the task's spacing, since resampling to
    it from their physical spacing (down to 0.07 µm) would shrink some below one patch.
    Returns the number of volumes written.
    """
    os.makedirs(folder, exist_ok=True)
    for i in range(num_cases):
        image, _ = make_task_volume(shape, UNLABELED_SEED + i)
        write_image(image, os.path.join(folder, f"lsm_{i:03d}_0000.tif"))
    for path in real_files:
        name = "real_" + os.path.basename(path)[: -len("_0000.tif")]
        shutil.copyfile(path, os.path.join(folder, name + "_0000.tif"))
        with open(os.path.join(folder, name + ".json"), "w") as f:
            json.dump({"spacing": list(DEFAULT_SPACING)}, f)
    return num_cases + len(real_files)


def fetch_real_volumes(cache: str) -> list[str]:
    """The real unlabeled volumes (``*_0000.tif``) in ``cache``, fetched there first when missing; [] with
    a warning when they cannot be had."""
    found = sorted(str(p) for p in Path(cache).glob("*_0000.tif"))
    if found:
        return found
    if not REAL_VOLUMES_SCRIPT.is_file():
        warnings.warn(f"{REAL_VOLUMES_SCRIPT}: not found; pretraining on synthetic volumes only", stacklevel=2)
        return []
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", str(REAL_VOLUMES_SCRIPT), cache], env=env, capture_output=True, text=True)
    found = sorted(str(p) for p in Path(cache).glob("*_0000.tif"))
    if result.returncode != 0 or not found:
        warnings.warn(f"real volumes unavailable ({result.stderr.strip()[-300:]}); pretraining on synthetic "
                      "volumes only", stacklevel=2)
        return []
    return found


def subsets(num_pool: int, ks: Sequence[int], seeds: Sequence[int]) -> list[dict]:
    """One labelled subset per (k, seed), drawn from the pool by the seed: [{fold, k, seed, train}]."""
    folds = []
    for k in ks:
        for seed in seeds:
            chosen = np.random.default_rng(1000 * seed + k).choice(num_pool, size=k, replace=False)
            folds.append({"fold": len(folds), "k": k, "seed": seed,
                          "train": [f"case_{i:03d}" for i in sorted(chosen.tolist())]})
    return folds


def write_splits(preprocessed_dataset: str, folds: list[dict]) -> None:
    """``splits_final.json``: fold i trains (and runs nnU-Net's per-epoch pseudo-validation) on subset i."""
    splits = [{"train": f["train"], "val": f["train"]} for f in folds]
    with open(os.path.join(preprocessed_dataset, "splits_final.json"), "w") as f:
        json.dump(splits, f, indent=2)


def plan_and_preprocess(features: Sequence[int], patch: Sequence[int], batch_size: int) -> str:
    """nnU-Net's fingerprint, planning and 3d_fullres preprocessing in-process, then the small
    configuration ``3d_lowlabel`` (same preprocessed data). Returns the preprocessed dataset folder."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    from nnssl.nnunet_adapter.plans import get_configuration, make_small_configuration

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, verbose=False,
                         show_progress_bar=False)
    plan_experiments([DATASET_ID])
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,), show_progress_bar=False)
    folder = os.path.join(os.environ["nnUNet_preprocessed"], DATASET_FOLDER)
    plans_file = os.path.join(folder, "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    fullres = get_configuration(plans, "3d_fullres", plans_file).configuration
    plans["configurations"][CONFIGURATION] = make_small_configuration(
        fullres, tuple(features), tuple(patch), batch_size)
    with open(plans_file, "w") as f:
        json.dump(plans, f, indent=4)
    return folder


def finetune(trainer_class: type, fold: int, seed: int, settings: dict, device: str, log_file: str):
    """Trains ``trainer_class`` (a ``*_lowLabel`` variant) on ``fold`` in-process with nnU-Net's console
    output in ``log_file``; ``settings``: attributes set before ``initialize()`` (num_epochs,
    num_iterations_per_epoch, the recipe's rates). Returns the trainer (its snapshots written)."""
    import torch

    folder = os.path.join(os.environ["nnUNet_preprocessed"], DATASET_FOLDER)
    with open(os.path.join(folder, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    plans["continue_training"] = False  # nnU-Net's trainer pops this key (get_trainer_from_args sets it)
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    with open(log_file, "a") as log, contextlib.redirect_stdout(log):
        trainer = trainer_class(plans, CONFIGURATION, fold, dataset_json, torch.device(device))
        trainer.seed = seed
        for key, value in settings.items():
            setattr(trainer, key, value)
        trainer.run_training()
    return trainer


def load_eval_cases(dataset_folder: str, split: str) -> list[tuple[str, np.ndarray, np.ndarray, list[float]]]:
    """Held-out cases of ``split`` (``Ts``: test, ``Dev``: development) as (name, image (1, Z, Y, X)
    float32, label (Z, Y, X), spacing (z, y, x))."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    io = SimpleITKIO()
    cases = []
    for name in sorted(os.listdir(os.path.join(dataset_folder, "labels" + split))):
        case = name[: -len(".nii.gz")]
        image, props = io.read_images([os.path.join(dataset_folder, "images" + split, case + "_0000.nii.gz")])
        label, _ = io.read_seg(os.path.join(dataset_folder, "labels" + split, name))
        cases.append((case, image.astype(np.float32), label[0], list(props["spacing"])))
    return cases


def second_metric_keys() -> list[str]:
    """The record keys of the structures' second metrics: ["nuclei_F1", "vessels_clDice"]."""
    return [f"{name}_{key}" for name, (_, key) in SECOND_METRICS.items()]


def case_scores(segmentation: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """One held-out case (Z, Y, X label maps): Dice per structure and each structure's second metric
    ({"nuclei": Dice, "nuclei_F1": F1, "vessels": Dice, "vessels_clDice": clDice}; NaN where both lack it)."""
    from nnssl.evaluation.metrics import label_metrics

    scores = {}
    for value, name in STRUCTURES.items():
        scores[name] = dice(segmentation, label, value)
        family, key = SECOND_METRICS[name]
        scores[f"{name}_{key}"] = label_metrics(segmentation == value, label == value, [family])[key]
    return scores


def score_snapshots(trainer, test_cases: list, device: str) -> dict[int, dict[str, float]]:
    """Dice per structure and each structure's second metric (``case_scores``; means over the held-out cases)
    of every weight snapshot of ``trainer``, predicted with nnU-Net's predictor (sliding window, no
    mirroring): {epochs done: {"nuclei": Dice, "nuclei_F1": F1, "vessels": Dice, "vessels_clDice": clDice}}."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device(device), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    scores: dict[int, dict[str, float]] = {}
    trainer.set_deep_supervision_enabled(False)  # one output, as nnU-Net's own validation does
    trainer.network.eval()
    for epochs in trainer.snapshot_epoch_list():
        weights = torch.load(trainer.snapshot_file(epochs), map_location="cpu", weights_only=True)
        network = getattr(trainer.network, "_orig_mod", trainer.network)
        predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, [weights],
                                        trainer.dataset_json, type(trainer).__name__, None)
        per_case = []
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            for _, image, label, spacing in test_cases:
                segmentation = predictor.predict_single_npy_array(image, {"spacing": spacing})
                per_case.append(case_scores(segmentation, label))
        scores[epochs] = {key: nan_mean([case[key] for case in per_case]) for key in per_case[0]}
    return scores
