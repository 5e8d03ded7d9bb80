"""Finds the pretrained checkpoint a fine-tuning run starts from (see docs/contracts.md).

Order: (1) environment variable ``nnssl_pretrained_weights`` (file or output folder), (2) plans key
``nnssl_pretrained_checkpoint`` (relative to ``$nnUNet_results`` when relative), (3) the single folder
``$nnUNet_results/<dataset_name>/nnsslPretrain_*__<plans_name>__<configuration>/``. Never falls back to
training from scratch: no checkpoint, or several, is an error that says what to do. (1) and (2) may name a
checkpoint made elsewhere in the nnU-Net SSL format (docs/checkpoints.md), or a Hugging Face model repository
(``https://huggingface.co/<org>/<repo>``, ``hf://<org>/<repo>[@<revision>]``, fetched by ``nnssl.checkpoints.hub``).
``resolve_pretrained`` is the one place a named checkpoint becomes a file.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import NamedTuple

from nnssl.checkpoints.hub import fetch_repository, parse_repository_reference
from nnssl.checkpoints.layout import FINAL_CHECKPOINT, flow1_run_pattern, resolve_checkpoint_path, results_root
from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

ENV_VAR = "nnssl_pretrained_weights"
PLANS_KEY = "nnssl_pretrained_checkpoint"


class PretrainedCheckpoint(NamedTuple):
    """A checkpoint file, a human-readable note on where it was found and, for a model repository, the
    reference pinned to the commit it resolved to (``hf://<org>/<repo>@<commit>``; None for a file)."""

    path: str
    source: str
    repository: str | None = None


def resolve_pretrained(value: str, named_by: str) -> PretrainedCheckpoint:
    """The checkpoint that ``value`` (named by ``named_by``, e.g. ``--pretrained``) names: a checkpoint file, an
    nnssl_pretrain output folder, or a model repository (downloaded into ``$nnssl_pretrained_models`` when needed).

    Raises:
        NnsslError: one line naming ``value`` and the fix.
    """
    reference = parse_repository_reference(value)
    if reference is None:
        return PretrainedCheckpoint(os.path.abspath(resolve_checkpoint_path(value)), named_by)
    fetched = fetch_repository(reference)
    return PretrainedCheckpoint(fetched.checkpoint, f"{fetched.describe()}, named by {named_by}", fetched.pinned)


def _results_root() -> str:
    return results_root(f" or set {ENV_VAR} to the pretrained checkpoint")


def _from_env() -> PretrainedCheckpoint | None:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    try:
        return resolve_pretrained(value, f"environment variable {ENV_VAR}")
    except NnsslError as e:
        raise NnsslError(f"{e} (set by the environment variable {ENV_VAR})") from e


def _from_plans(plans: dict) -> PretrainedCheckpoint | None:
    value = plans.get(PLANS_KEY)
    if not value:
        return None
    if parse_repository_reference(value) is None and not os.path.isabs(value):
        value = os.path.join(_results_root(), value)
    try:
        return resolve_pretrained(value, f"plans key {PLANS_KEY}")
    except NnsslError as e:
        raise NnsslError(
            f"{e} (named by the plans key {PLANS_KEY}); re-run nnssl_plan_like_pretrained or set {ENV_VAR}"
        ) from e


def _from_convention(dataset_name: str, plans_name: str, configuration: str) -> PretrainedCheckpoint:
    pattern = flow1_run_pattern(_results_root(), dataset_name, plans_name, configuration)
    folders = sorted(f for f in glob.glob(pattern) if os.path.isdir(f))
    finished = [f for f in folders if os.path.isfile(os.path.join(f, FINAL_CHECKPOINT))]
    if len(finished) == 1:
        path = os.path.join(finished[0], FINAL_CHECKPOINT)
        return PretrainedCheckpoint(
            path, f"the only pretraining of {dataset_name} ({plans_name}, {configuration})"
        )
    if len(finished) > 1:
        raise NnsslError(
            f"{len(finished)} pretrained checkpoints match {pattern}: {', '.join(finished)}; "
            f"choose one with export {ENV_VAR}=<folder or checkpoint file>"
        )
    unfinished = (
        f" (unfinished, no {FINAL_CHECKPOINT}: {', '.join(folders)}; resume it with nnssl_pretrain ... --c)"
        if folders
        else ""
    )
    raise NnsslError(
        f"no pretrained checkpoint for {dataset_name} ({plans_name}, {configuration}) in "
        f"{os.path.join(pattern, FINAL_CHECKPOINT)}{unfinished}; pretrain first with "
        f"nnssl_pretrain -d {dataset_name} -i <unlabeled images folder>, or export {ENV_VAR}=<checkpoint>, "
        f"or train from scratch with -tr nnUNetTrainer"
    )


def find_pretrained_checkpoint(plans: dict, configuration: str) -> PretrainedCheckpoint:
    """The checkpoint for fine-tuning ``configuration`` of the dataset and plans named in ``plans``.

    Raises:
        NnsslError: when the variable or plans key points nowhere, or the convention finds no finished
            pretraining or several.
    """
    found = _from_env() or _from_plans(plans)
    if found is None:
        found = _from_convention(plans["dataset_name"], plans["plans_name"], configuration)
    logger.info("pretrained checkpoint %s (from %s)", found.path, found.source)
    return found
