"""Pieces of the low-label benchmark (``benchmarks/low_label.py``): the nnU-Net dataset of the synthetic
two-structure task (``nnssl.demo.lsm_task``: nuclei-like clusters, thin dim vessel-like tubes, volumes that
differ as light-sheet acquisitions do) with one split per labelled subset, the unlabeled pool, seeded
fine-tuning and scoring (Dice per structure, plus detection F1 for the nuclei and clDice for the vessels, from
``nnssl.evaluation``).
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
from pathlib import Path

import numpy as np

from nnssl.atomic_files import write_json_atomic
from nnssl.demo.lsm_task import STRUCTURES, make_task_volume, write_dataset_json, write_task_cases
from nnssl.demo.synthetic import DEFAULT_SPACING, write_image
from nnssl.evaluation.summary import nan_mean

DATASET_ID = 502
DATASET_NAME = "LowLabelLSM"
DATASET_FOLDER = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
CONFIGURATION = "3d_lowlabel"
TEST_SEED = 10000  # held-out test volumes (imagesTs): confirmation only
DEV_SEED = 30000  # development volumes (imagesDev): choosing recipes and settings
UNLABELED_SEED = 20000
# beside Dice, each structure's own metric (nnssl.evaluation, as nnssl_evaluate computes it): detection F1 over
# connected components for the nuclei, centreline Dice for the vessels; recorded as "<structure>_<metric>"
SECOND_METRICS = {"nuclei": ("instances", "F1"), "vessels": ("cldice", "clDice")}
REAL_VOLUMES_SCRIPT = Path(__file__).resolve().parent / "get_real_volumes.sh"
def write_task_dataset(raw: str, num_pool: int, num_test: int, shape: tuple[int, int, int]) -> str:
    """nnU-Net raw dataset of the task (``nnssl.demo.lsm_task``): ``num_pool`` labelled training cases (seeds
    0..), ``num_test`` held-out test cases in imagesTs/labelsTs (seeds ``TEST_SEED``..) and as many development
    cases in imagesDev/labelsDev (seeds ``DEV_SEED``.., never used for confirmation; nnU-Net ignores the
    folder). Returns the dataset folder."""
    folder = os.path.join(raw, DATASET_FOLDER)
    write_task_cases(folder, "Tr", [(f"case_{i:03d}", i) for i in range(num_pool)], shape)
    write_task_cases(folder, "Ts", [(f"test_{j:03d}", TEST_SEED + j) for j in range(num_test)], shape)
    write_task_cases(folder, "Dev", [(f"dev_{j:03d}", DEV_SEED + j) for j in range(num_test)], shape)
    write_dataset_json(folder, DATASET_NAME, num_pool, "Synthetic light-sheet-like low-label task (low_label.py)")
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
        # the sidecar is named after the case (lsm_000.json), as nnU-Net's Tiff3DIO and nnssl read it
        write_image(image, os.path.join(folder, f"lsm_{i:03d}_0000.tif"),
                    sidecar_json=os.path.join(folder, f"lsm_{i:03d}.json"))
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
    # atomic: a second run on the same folder (--continue with other arms) rewrites it while trainers read it
    write_json_atomic(os.path.join(preprocessed_dataset, "splits_final.json"), splits)


def plan_and_preprocess(features: Sequence[int], patch: Sequence[int], batch_size: int) -> str:
    """nnU-Net's fingerprint, planning and 3d_fullres preprocessing in-process, then the small
    configuration ``3d_lowlabel`` (same preprocessed data). Returns the preprocessed dataset folder."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    from nnssl.nnunet_adapter.plans_and_networks import get_configuration, make_small_configuration

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


def case_scores(segmentation: np.ndarray, label: np.ndarray, second_metrics: bool = True) -> dict[str, float]:
    """One held-out case (Z, Y, X label maps): Dice per structure (nnU-Net's rule, ``nnssl.evaluation``) and,
    with ``second_metrics``, each structure's second metric ({"nuclei": Dice, "nuclei_F1": F1, "vessels": Dice,
    "vessels_clDice": clDice}; NaN where both lack it)."""
    from nnssl.evaluation.metrics import label_metrics

    scores = {}
    for value, name in STRUCTURES.items():
        families = ["overlap", SECOND_METRICS[name][0]] if second_metrics else ["overlap"]
        metrics = label_metrics(segmentation == value, label == value, families)
        scores[name] = metrics["Dice"]
        if second_metrics:
            scores[f"{name}_{SECOND_METRICS[name][1]}"] = metrics[SECOND_METRICS[name][1]]
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
    last = max(trainer.snapshot_epoch_list())
    for epochs in trainer.snapshot_epoch_list():
        weights = torch.load(trainer.snapshot_file(epochs), map_location="cpu", weights_only=True)
        network = getattr(trainer.network, "_orig_mod", trainer.network)
        predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, [weights],
                                        trainer.dataset_json, type(trainer).__name__, None)
        per_case = []
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            for _, image, label, spacing in test_cases:
                segmentation = predictor.predict_single_npy_array(image, {"spacing": spacing})
                # the second metrics (connected components, skeletons) only where they are reported: at the end
                per_case.append(case_scores(segmentation, label, second_metrics=epochs == last))
        scores[epochs] = {key: nan_mean([case[key] for case in per_case]) for key in per_case[0]}
    return scores
