"""Where checkpoints live: their file names, nnU-Net's results folder and flow 1's run folder (docs/contracts.md)."""

from __future__ import annotations

import os

from nnssl.nnunet_folders import RESULTS_ENV, nnunet_folder

# the names nnU-Net gives its own training checkpoints too (in ``fold_X/``)
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
PRETRAIN_FOLDER_PREFIX = "nnsslPretrain_"


def results_root(hint: str = "") -> str:
    """nnU-Net's results folder (``nnunet_folder``: a one-line error naming the fix, plus ``hint``, when unset)."""
    return nnunet_folder(RESULTS_ENV, hint)


def flow1_run_folder(results: str, dataset_name: str, method: str, plans_name: str, configuration: str) -> str:
    """``<results>/<dataset_name>/<PRETRAIN_FOLDER_PREFIX><method>__<plans_name>__<configuration>``: a flow-1 run."""
    return os.path.join(results, dataset_name, f"{PRETRAIN_FOLDER_PREFIX}{method}__{plans_name}__{configuration}")


def flow1_run_pattern(results: str, dataset_name: str, plans_name: str, configuration: str) -> str:
    """The glob pattern of every method's flow-1 run folder of a dataset, plans and configuration."""
    return flow1_run_folder(results, dataset_name, "*", plans_name, configuration)
