"""Shared fixtures: one tiny synthetic nnU-Net dataset, one unlabeled folder and the pretrainings
built from them, made once per test session (every nnU-Net process costs ~12 s and ~1 GB here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DATASET_ID = 501
TINY_CONFIGURATION = "3d_tiny"
SHORT_SSL_TRAINER = "nnSSLTrainer_2epochs_5iters_noMirroring"
SHORT_STOCK_TRAINER = "nnUNetTrainer_2epochs_5iters_noMirroring"
PREDICT_FOLD = "3"  # folds 0-2 of the tiny configuration belong to other tests
PREDICT_OPTIONS = {"-d": str(DATASET_ID), "-c": TINY_CONFIGURATION, "-f": PREDICT_FOLD, "-tr": SHORT_STOCK_TRAINER,
                   "-device": "cpu"}
PREDICT_ARGS = [*(x for option in PREDICT_OPTIONS.items() for x in option), "--disable_progress_bar"]
PRETRAIN_SCHEDULE = ["--epochs", "2", "--iterations-per-epoch", "3", "--val-iterations", "2", "-device", "cpu",
                     "--num-workers", "0", "--no-pbar", "--preview-every", "1"]


class NnunetEnv:
    """nnU-Net folders in a temporary directory and a way to run the real CLIs against them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw, self.preprocessed, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)

    def env(self, training: bool = True, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("nnssl_")}
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), nnUNet_compile="false", nnUNet_def_n_proc="1",
                   PYTHONWARNINGS="ignore", HF_HOME=str(self.root / "huggingface"), HF_HUB_DISABLE_TELEMETRY="1")
        if training:
            env["nnUNet_n_proc_DA"] = "0"  # planning crashes with 0 workers: only for training/prediction
        else:
            env.pop("nnUNet_n_proc_DA", None)
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = True, training: bool = True, timeout: int = 600,
            **extra_env: str) -> subprocess.CompletedProcess:
        cmd = [str(BIN / args[0]), *args[1:]]
        result = subprocess.run(cmd, env=self.env(training, **extra_env), capture_output=True, text=True,
                                timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}"
                                 f"\nSTDERR:\n{result.stderr[-4000:]}")
        return result

    def dataset_dir(self, kind: str) -> Path:
        base = {"raw": self.raw, "preprocessed": self.preprocessed, "results": self.results}[kind]
        return next(base.glob(f"Dataset{DATASET_ID:03d}_*"))


def add_tiny_configuration(plans_file: Path) -> None:
    """Adds '3d_tiny' (3 stages, 8/16/32 features, patch 16x32x32) reusing 3d_fullres's preprocessed data."""
    from nnssl.nnunet_adapter.plans_and_networks import get_configuration, make_small_configuration

    plans = json.loads(plans_file.read_text())
    resolved = get_configuration(plans, "3d_fullres").configuration
    plans["configurations"][TINY_CONFIGURATION] = make_small_configuration(resolved)
    plans_file.write_text(json.dumps(plans, indent=2))


@pytest.fixture(scope="session")
def nnunet(tmp_path_factory) -> NnunetEnv:
    """Dataset501 (6 labelled cases), planned and preprocessed by nnU-Net, plus '3d_tiny' in its plans."""
    from tests.synthetic import write_labeled_dataset

    env = NnunetEnv(tmp_path_factory.mktemp("nnunet"))
    write_labeled_dataset(str(env.raw), DATASET_ID, num_cases=6, shape=(32, 64, 64), num_test_cases=2)
    env.run("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-npfp", "1", "-np", "1",
            "--no_pbar", training=False)
    add_tiny_configuration(env.dataset_dir("preprocessed") / "nnUNetPlans.json")
    return env


@pytest.fixture(scope="session")
def unlabeled_folder(tmp_path_factory) -> Path:
    from tests.synthetic import write_unlabeled_folder

    folder = tmp_path_factory.mktemp("unlabeled")
    write_unlabeled_folder(str(folder), num_cases=4, shape=(32, 64, 64), seed=100)
    return folder


@pytest.fixture(scope="session")
def flow1_run(nnunet: NnunetEnv, unlabeled_folder: Path) -> Path:
    """``nnssl_pretrain -d 501 -c 3d_tiny``: the run folder."""
    nnunet.run("nnssl_pretrain", "-d", str(DATASET_ID), "-i", str(unlabeled_folder), "-c", TINY_CONFIGURATION,
               *PRETRAIN_SCHEDULE)
    return nnunet.dataset_dir("results") / f"nnsslPretrain_mae__nnUNetPlans__{TINY_CONFIGURATION}"


@pytest.fixture(scope="session")
def flow2_run(nnunet: NnunetEnv, unlabeled_folder: Path) -> Path:
    """Standalone ``nnssl_pretrain -o`` with a 3-stage 8/16/32 network: the output folder."""
    out = nnunet.root / "standalone_mae"
    nnunet.run("nnssl_pretrain", "-i", str(unlabeled_folder), "-o", str(out), "--features-per-stage", "8", "16",
               "32", "--patch-size", "16", "32", "32", "-b", "2", *PRETRAIN_SCHEDULE)
    return out


@pytest.fixture(scope="session")
def predict_model(nnunet: NnunetEnv) -> NnunetEnv:
    """A segmentation model of 3d_tiny (fold ``PREDICT_FOLD``, stock trainer) for ``nnssl_predict``."""
    nnunet.run("nnUNetv2_train", str(DATASET_ID), TINY_CONFIGURATION, PREDICT_FOLD, "-tr", SHORT_STOCK_TRAINER,
               "-device", "cpu")
    return nnunet
