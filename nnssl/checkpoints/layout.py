"""Where checkpoints live: their file names, nnU-Net's results folder, flow 1's run folder and the checkpoint file a
path names (docs/contracts.md). Needs no torch: command lines check paths before importing it."""

from __future__ import annotations

import os
import re

from nnssl.errors import NnsslError
from nnssl.nnunet_folders import RESULTS_ENV, nnunet_folder

# the names nnU-Net gives its own training checkpoints too (in ``fold_X/``)
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
# what else a pretraining run folder holds (docs/contracts.md, "Folders")
RUN_FILE = "nnssl_run.json"
PROGRESS_FIGURE = "progress.png"
PREVIEWS_FOLDER = "previews"
# the plans and dataset.json the run trained with, named as in nnU-Net's own training folders
PLANS_FILE = "plans.json"
DATASET_FILE = "dataset.json"
_PREVIEW = re.compile(r"epoch_(\d{4,})\.png")
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


def preview_name(epoch: int) -> str:
    """The reconstruction preview after ``epoch`` epochs, inside ``PREVIEWS_FOLDER``: ``epoch_0010.png``."""
    return f"epoch_{epoch:04d}.png"


def preview_epoch(name: str) -> int | None:
    """The epoch of a preview file name written by ``preview_name``, else None."""
    match = _PREVIEW.fullmatch(name)
    return int(match.group(1)) if match else None


def resolve_checkpoint_path(path_or_folder: str) -> str:
    """Accepts an nnssl output folder or a checkpoint file and returns the checkpoint file."""
    if os.path.isdir(path_or_folder):
        candidate = os.path.join(path_or_folder, FINAL_CHECKPOINT)
        if not os.path.isfile(candidate):
            raise NnsslError(
                f"{path_or_folder}: no {FINAL_CHECKPOINT} in this folder; pass a finished nnssl_pretrain "
                f"output folder or the checkpoint file itself"
            )
        return candidate
    if os.path.isfile(path_or_folder):
        return path_or_folder
    raise NnsslError(f"{path_or_folder}: no such checkpoint file or folder; check the path")
