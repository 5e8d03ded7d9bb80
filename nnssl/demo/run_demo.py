"""nnssl_demo: the whole nnssl flow on synthetic light-sheet-like data, on a CPU, in minutes.

Creates a work folder, generates unlabeled volumes and a small labelled dataset, then runs the
real command-line tools in subprocesses: nnU-Net planning and preprocessing, nnssl MAE
pretraining, nnU-Net fine-tuning with nnSSLTrainer and training from scratch with the same
budget, prediction of held-out cases with both, and the Dice of each against the reference.
nnUNet_raw / nnUNet_preprocessed / nnUNet_results point into the work folder for the
subprocesses only. Each step's output goes to a log file in ``<out>/logs``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace

from nnssl.checkpoints.layout import FINAL_CHECKPOINT, flow1_run_folder
from nnssl.demo.report import CONFIRMATION_STUDY, verdict_line
from nnssl.demo.steps import DemoStepError, StepRunner, print_failure
from nnssl.nnunet_folders import PREPROCESSED_ENV, RAW_ENV, RESULTS_ENV
from nnssl.pretraining.engine.settings import DEFAULT_METHOD

logger = logging.getLogger(__name__)

DATASET_ID = 501
DATASET_NAME = "SyntheticLSM"
CPU_CONFIGURATION = "3d_cpu"
MARKER_FILE = ".nnssl_demo"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of one demo run. The task (``nnssl.demo.lsm_task``) and its seeds are fixed:
    labelled volumes from ``LABELLED_SEED``, held-out ones from ``TEST_SEED``, unlabeled ones from
    ``UNLABELED_SEED``."""

    num_unlabeled: int = 12
    unlabeled_shape: tuple[int, int, int] = (32, 96, 96)
    num_train: int = 2  # labelled volumes both arms learn from (fold 0 of splits_final.json)
    num_val: int = 1  # fold 0's validation volume: nnU-Net's pseudo-Dice after every epoch
    num_test: int = 3
    shape: tuple[int, int, int] = (32, 64, 64)
    pretrain_epochs: int = 30
    pretrain_iterations: int = 25
    pretrain_val_iterations: int = 3
    ssl_trainer: str = "nnSSLTrainer_10epochs_25iters"
    scratch_trainer: str = "nnUNetTrainer_10epochs_25iters"
    finetune_iterations: int = 25  # per epoch, of both trainers (for the Dice-vs-steps plot)
    disable_tta: bool = False


QUICK = DemoSettings(
    num_unlabeled=4,
    unlabeled_shape=(32, 64, 64),
    num_test=1,
    pretrain_epochs=2,
    pretrain_iterations=5,
    pretrain_val_iterations=2,
    ssl_trainer="nnSSLTrainer_2epochs_5iters_noMirroring",
    scratch_trainer="nnUNetTrainer_2epochs_5iters_noMirroring",
    finetune_iterations=5,
    disable_tta=True,
)
LABELLED_SEED, TEST_SEED, UNLABELED_SEED = 40000, 41000, 42000  # fixed before the demo's result was seen


def prepare_work_folder(out: str) -> str:
    """Creates (or, when it holds an earlier demo run, empties) the work folder; returns its path."""
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, MARKER_FILE)):
            raise SystemExit(f"{out}: exists and is not an nnssl_demo work folder; choose another --out")
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "logs"))
    with open(os.path.join(out, MARKER_FILE), "w") as f:
        f.write("nnssl_demo work folder; removed and rebuilt by the next nnssl_demo run here\n")
    return out


def generate_data(out: str, settings: DemoSettings) -> tuple[str, str]:
    """Unlabeled volumes (TIFF + spacing sidecar) in ``out/unlabeled`` and the labelled dataset (imagesTr:
    training and validation volumes, imagesTs: held-out ones) of the task; returns (unlabeled, dataset)."""
    from nnssl.demo.lsm_task import make_task_volume, write_dataset_json, write_task_cases
    from nnssl.demo.synthetic import write_image

    unlabeled = os.path.join(out, "unlabeled")
    os.makedirs(unlabeled)
    for i in range(settings.num_unlabeled):
        image, _ = make_task_volume(settings.unlabeled_shape, UNLABELED_SEED + i)
        write_image(image, os.path.join(unlabeled, f"lsm_{i:03d}_0000.tif"),
                    sidecar_json=os.path.join(unlabeled, f"lsm_{i:03d}.json"))  # spacing sidecar: CASE.json
    dataset = os.path.join(out, RAW_ENV, f"Dataset{DATASET_ID:03d}_{DATASET_NAME}")
    labelled = settings.num_train + settings.num_val
    write_task_cases(dataset, "Tr", [(f"case_{i:03d}", LABELLED_SEED + i) for i in range(labelled)], settings.shape)
    write_task_cases(dataset, "Ts", [(f"test_{i:03d}", TEST_SEED + i) for i in range(settings.num_test)],
                     settings.shape)
    write_dataset_json(dataset, DATASET_NAME, labelled, "nnssl_demo: synthetic light-sheet-like nuclei and vessels")
    return unlabeled, dataset


def write_split(out: str, settings: DemoSettings) -> str:
    """``splits_final.json`` with fold 0 only: the first ``num_train`` labelled volumes train, the rest
    validate (a few labelled volumes, as in a light-sheet project). Returns the file."""
    preprocessed = os.path.join(out, PREPROCESSED_ENV, f"Dataset{DATASET_ID:03d}_{DATASET_NAME}")
    cases = [f"case_{i:03d}" for i in range(settings.num_train + settings.num_val)]
    path = os.path.join(preprocessed, "splits_final.json")
    with open(path, "w") as f:
        json.dump([{"train": cases[: settings.num_train], "val": cases[settings.num_train :]}], f, indent=2)
    return path


def add_cpu_configuration(out: str) -> str:
    """Adds ``3d_cpu`` (3 stages 8/16/32, patch 16x32x32) to the dataset's nnUNetPlans.json.

    Built from the resolved 3d_fullres configuration, so it keeps its ``data_identifier`` and
    reuses the 3d_fullres preprocessed data. Returns the plans file.
    """
    from nnssl.nnunet_adapter.plans_and_networks import get_configuration, make_small_configuration

    dataset_name = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    plans_file = os.path.join(out, PREPROCESSED_ENV, dataset_name, "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    fullres = get_configuration(plans, "3d_fullres", plans_file).configuration
    plans["configurations"][CPU_CONFIGURATION] = make_small_configuration(
        fullres, features_per_stage=(8, 16, 32), patch_size=(16, 32, 32), batch_size=2
    )
    with open(plans_file, "w") as f:
        json.dump(plans, f, indent=4)
    return plans_file


def train_and_predict(runner: StepRunner, out: str, trainer: str, arm: str, settings: DemoSettings) -> str:
    """Fine-tunes (or trains from scratch) fold 0 and predicts imagesTs; returns the prediction folder."""
    runner.run(
        f"train ({arm})",
        f"train_{arm}",
        ["nnUNetv2_train", str(DATASET_ID), CPU_CONFIGURATION, "0", "-tr", trainer, "-device", "cpu"],
    )
    predictions = os.path.join(out, "predictions", arm)
    dataset_folder = os.path.join(out, RAW_ENV, f"Dataset{DATASET_ID:03d}_{DATASET_NAME}")
    command = [
        "nnUNetv2_predict", "-i", os.path.join(dataset_folder, "imagesTs"), "-o", predictions,
        "-d", str(DATASET_ID), "-c", CPU_CONFIGURATION, "-f", "0", "-tr", trainer, "-device", "cpu",
        "--disable_progress_bar", "-npp", "1", "-nps", "1",
    ]  # fmt: skip
    if settings.disable_tta:
        command.append("--disable_tta")
    runner.run(f"predict ({arm})", f"predict_{arm}", command)
    return predictions


@dataclass
class DemoResult:
    """What the demo reports: held-out Dice per arm, the pretraining's ``val / trivial`` ratio (below 1:
    the network learned to reconstruct) and the Dice-vs-steps plot of both arms."""

    dice: dict[str, dict[str, float]]  # arm -> {"nuclei", "vessels", "mean"}
    pretraining_ratio: float | None
    dice_plot: str


def _results_folder(out: str, *parts: str) -> str:
    return os.path.join(out, RESULTS_ENV, f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", *parts)


def _plot_dice_curves(out: str, arms: dict[str, str], settings: DemoSettings) -> str:
    from nnssl.demo.report import plot_dice_vs_steps, pseudo_dice_per_epoch

    curves = {arm: pseudo_dice_per_epoch(_results_folder(out, f"{trainer}__nnUNetPlans__{CPU_CONFIGURATION}", "fold_0",
                                                  FINAL_CHECKPOINT))
              for arm, trainer in arms.items()}
    path = os.path.join(out, "dice_vs_steps.png")
    plot_dice_vs_steps(curves, settings.finetune_iterations, path)
    return path


def run_pipeline(runner: StepRunner, out: str, settings: DemoSettings) -> DemoResult:
    """All steps. Raises DemoStepError on a failed step."""
    unlabeled, dataset_folder = runner.call(
        "generate synthetic data",
        lambda: generate_data(out, settings),
        f"{settings.num_unlabeled} unlabeled volumes, {settings.num_train} train + {settings.num_val} validation + "
        f"{settings.num_test} test labelled volumes",
    )
    runner.run(
        "nnU-Net plan and preprocess",
        "plan_and_preprocess",
        ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-npfp", "1", "-np", "1",
         "--verify_dataset_integrity", "--no_pbar"],
        planning=True,
    )  # fmt: skip
    print(
        "CPU demo: adding a small configuration 3d_cpu (3 stages 8/16/32, patch 16x32x32) because "
        "nnU-Net's planned network is too slow for 2 CPU cores",
        flush=True,
    )
    runner.call("add configuration 3d_cpu", lambda: add_cpu_configuration(out))
    runner.call("split: fold 0", lambda: write_split(out, settings),
                f"{settings.num_train} labelled volumes train, {settings.num_val} validate")
    runner.run(
        "nnssl MAE pretraining",
        "pretrain",
        ["nnssl_pretrain", "-d", str(DATASET_ID), "-i", unlabeled, "-c", CPU_CONFIGURATION, "-device", "cpu",
         "--epochs", str(settings.pretrain_epochs),
         "--iterations-per-epoch", str(settings.pretrain_iterations),
         "--val-iterations", str(settings.pretrain_val_iterations), "--no-pbar"],
    )  # fmt: skip
    from nnssl.demo.report import pretraining_ratio

    run = flow1_run_folder(os.path.join(out, RESULTS_ENV), f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", DEFAULT_METHOD,
                           "nnUNetPlans", CPU_CONFIGURATION)
    ratio = runner.call("pretraining: validation loss vs the trivial answer", lambda: pretraining_ratio(run))
    arms = {"pretrained": settings.ssl_trainer, "scratch": settings.scratch_trainer}
    predictions = {arm: train_and_predict(runner, out, tr, arm, settings) for arm, tr in arms.items()}
    dice = runner.call("Dice on held-out cases", lambda: _scores_per_arm(predictions, dataset_folder, out))
    plot = runner.call("Dice-vs-steps plot", lambda: _plot_dice_curves(out, arms, settings))
    return DemoResult(dice, ratio, plot)


def _scores_per_arm(predictions: dict[str, str], dataset_folder: str, out: str) -> dict[str, dict[str, float]]:
    """Dice per structure and their mean, per arm, from ``nnssl.evaluation`` (nnU-Net's rule; a
    summary.json per arm in ``out``); per-case mean Dice in ``out/dice.json``."""
    from nnssl.demo.lsm_task import STRUCTURES
    from nnssl.evaluation.folders import evaluate_folders

    references = os.path.join(dataset_folder, "labelsTs")
    dice, per_case = {}, {}
    for arm, folder in predictions.items():
        summary = evaluate_folders(references, folder, os.path.join(out, f"summary_{arm}.json"),
                                   labels=list(STRUCTURES), families=("overlap",))
        dice[arm] = {name: summary["mean"][str(label)]["Dice"] for label, name in STRUCTURES.items()}
        dice[arm]["mean"] = summary["foreground_mean"]["Dice"]
        per_case[arm] = {os.path.basename(case["reference_file"]).split(".")[0]:
                         sum(case["metrics"][str(label)]["Dice"] for label in STRUCTURES) / len(STRUCTURES)
                         for case in summary["metric_per_case"]}
    with open(os.path.join(out, "dice.json"), "w") as f:
        json.dump(per_case, f, indent=2)
    return dice


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nnssl_demo",
        description="Runs nnssl end to end on synthetic light-sheet-like data on the CPU: MAE pretraining, "
        "fine-tuning with nnSSLTrainer, training from scratch with the same budget, Dice of both.",
    )
    parser.add_argument("--out", default="./nnssl_demo_output", help="work folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a much shorter smoke run (a few minutes)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="nnssl_pretrain --epochs")
    parser.add_argument(
        "--pretrain-iterations", type=int, default=None, help="nnssl_pretrain --iterations-per-epoch"
    )
    parser.add_argument(
        "--ssl-trainer", default=None, help="fine-tuning trainer (default: nnSSLTrainer_10epochs_25iters)"
    )
    parser.add_argument(
        "--scratch-trainer", default=None, help="baseline trainer (default: nnUNetTrainer_10epochs_25iters)"
    )
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The run's settings: the full or quick defaults, with the options given on the command line."""
    settings = QUICK if args.quick else DemoSettings()
    overrides = {
        "pretrain_epochs": args.pretrain_epochs,
        "pretrain_iterations": args.pretrain_iterations,
        "ssl_trainer": args.ssl_trainer,
        "scratch_trainer": args.scratch_trainer,
    }
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nnssl_demo``; returns 0 on success, 1 when a step failed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    settings = settings_from_args(args)
    out = prepare_work_folder(args.out)
    print(f"nnssl demo ({'quick' if args.quick else 'full'}) in {out}", flush=True)
    start = time.monotonic()
    runner = StepRunner(out, total_steps=12)
    try:
        result = run_pipeline(runner, out, settings)
    except DemoStepError as e:
        print_failure(e)
        return 1
    runner.print_timings()
    ratio = result.pretraining_ratio
    verdict = "not recorded" if ratio is None else f"{ratio:.3f} ({'below' if ratio < 1 else 'NOT below'} 1: the " \
        f"network {'learned' if ratio < 1 else 'did not learn'} to reconstruct hidden voxels)"
    print(f"\n=== nnssl demo: MAE pretraining, validation loss / trivial answer's: {verdict}")
    print(f"=== nnssl demo: Dice on {settings.num_test} held-out volumes; both arms learned from "
          f"{settings.num_train} labelled volumes ===")
    for arm, label in (("pretrained", f"pretrained (MAE) + {settings.ssl_trainer}"),
                       ("scratch", f"from scratch, {settings.scratch_trainer}")):
        print(f"  {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.dice[arm].items()))
    print(verdict_line(result.dice))
    print(f"confirmation study (docs/results.md): {CONFIRMATION_STUDY}")
    print(f"Dice vs fine-tuning steps of both arms: {result.dice_plot}")
    print(f"total time {time.monotonic() - start:.0f} s; per-case Dice in {os.path.join(out, 'dice.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
