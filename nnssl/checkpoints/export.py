"""``nnssl_export``: a finished pretraining run folder in, a complete Hugging Face model repository out.

The repository has the layout nnU-Net master's ``maybe_download_pretrained_weights`` and ``nnssl.checkpoints.hub``
download (``adaptation_plan.json``, ``checkpoint_final.pth``, ``config.json``) plus the model card
(``README.md``, ``nnssl.checkpoints.model_card``), ``progress.png`` and the last reconstruction preview. The
checkpoint keeps the weights and the adaptation plan only: no optimizer or training state, no nnssl metadata,
CPU tensors, loadable with ``torch.load(f, weights_only=True)``. Everything is written into a temporary folder
next to the output and renamed into place: a failed export leaves nothing. torch is imported only after the
cheap checks (options, output folder, run folder).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.adaptation_plan import ADAPTATION_PLAN_KEY, WEIGHTS_KEY, adaptation_plan_from_metadata
from nnssl.checkpoints.hub import ADAPTATION_PLAN_FILE, CONFIG_FILE, is_repo_id
from nnssl.checkpoints.layout import (
    DATASET_FILE,
    FINAL_CHECKPOINT,
    LATEST_CHECKPOINT,
    PREVIEWS_FOLDER,
    PROGRESS_FIGURE,
    RUN_FILE,
    preview_epoch,
)
from nnssl.checkpoints.model_card import PREVIEW_FILE, CardOptions, PretrainingRun, model_card
from nnssl.errors import NnsslError
from nnssl.output_folder import check_creatable, first_missing

logger = logging.getLogger(__name__)

MODEL_CARD_FILE = "README.md"
EXPORTED_KEYS = (WEIGHTS_KEY, ADAPTATION_PLAN_KEY)
# a licence identifier as the Hub's model cards take it (apache-2.0, mit, cc-by-4.0, other, ...)
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
# a model-card tag that YAML reads as the string written (no '#', ':', quotes or spaces)
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_options(output: str, options: CardOptions) -> None:
    """The cheap checks: output folder new (or empty), its parent creatable and writable (the repository is
    written next to it, then renamed), licence, tags and repository id well formed."""
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise NnsslError(f"{output}: exists and is not empty; choose a new output folder (nnssl_export writes a "
                         f"whole repository or nothing)")
    check_creatable(os.path.dirname(os.path.abspath(output)))
    if not _LICENSE.fullmatch(options.license):
        raise NnsslError(f"--license {options.license}: not a licence identifier of the Hub; use e.g. apache-2.0, "
                         f"mit, cc-by-4.0 (https://huggingface.co/docs/hub/repositories-licenses)")
    for tag in options.tags:
        if not _TAG.fullmatch(tag):
            raise NnsslError(f"--tag {tag!r}: write a tag with letters, digits, '.', '_', '+' and '-' only, e.g. "
                             f"mouse-brain")
    if options.repo_id is not None and not is_repo_id(options.repo_id):
        raise NnsslError(f"--repo-id {options.repo_id}: write it as <org>/<repo>, e.g. my-lab/lsm-mae")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise NnsslError(f"{path}: unreadable ({e}); re-run nnssl_pretrain") from e


def _checked_run_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise NnsslError(f"{folder}: no such folder; pass the output folder of nnssl_pretrain")
    if not os.path.isfile(os.path.join(folder, FINAL_CHECKPOINT)):
        if os.path.isfile(os.path.join(folder, LATEST_CHECKPOINT)):
            raise NnsslError(f"{folder}: the run is not finished (no {FINAL_CHECKPOINT} yet); finish it with "
                             f"nnssl_pretrain ... --continue, then export")
        raise NnsslError(f"{folder}: no {FINAL_CHECKPOINT}; pass the output folder of a finished nnssl_pretrain run")
    if not os.path.isfile(os.path.join(folder, RUN_FILE)):
        raise NnsslError(f"{folder}: no {RUN_FILE}; pass the output folder of nnssl_pretrain (it writes one)")


def _last_preview(folder: str) -> tuple[str | None, int | None]:
    """(path, epoch) of the run's last reconstruction preview, or (None, None)."""
    previews = os.path.join(folder, PREVIEWS_FOLDER)
    names = os.listdir(previews) if os.path.isdir(previews) else []
    epochs = {preview_epoch(name): name for name in names if preview_epoch(name) is not None}
    if not epochs:
        return None, None
    last = max(epochs)
    return os.path.join(previews, epochs[last]), last


def read_run(folder: str, name: str) -> tuple[PretrainingRun, str | None]:
    """The run (for the card) and its last preview's path; one-line errors for anything but a finished
    nnssl_pretrain run folder."""
    _checked_run_folder(folder)
    from nnssl.checkpoints.files import load_checkpoint  # torch: after the cheap checks

    checkpoint = load_checkpoint(folder)
    if not isinstance(checkpoint.get("nnssl_metadata"), dict):
        raise NnsslError(f"{os.path.join(folder, FINAL_CHECKPOINT)}: has no nnssl_metadata, so it was not written "
                         f"by nnssl_pretrain; nnssl_export exports nnssl_pretrain runs")
    dataset_file = os.path.join(folder, DATASET_FILE)
    dataset_json = _read_json(dataset_file) if os.path.isfile(dataset_file) else {}
    preview, epoch = _last_preview(folder)
    run = PretrainingRun(name, checkpoint, _read_json(os.path.join(folder, RUN_FILE)), dataset_json,
                         os.path.isfile(os.path.join(folder, PROGRESS_FIGURE)), epoch)
    return run, preview


def exported_checkpoint(checkpoint: dict) -> dict:
    """The weights and the adaptation plan, nothing else (a run from before the plan was written gets it now)."""
    plan = checkpoint.get(ADAPTATION_PLAN_KEY) or adaptation_plan_from_metadata(checkpoint["nnssl_metadata"])
    return {WEIGHTS_KEY: checkpoint[WEIGHTS_KEY], ADAPTATION_PLAN_KEY: plan}


def repository_config(run: PretrainingRun, plan: dict) -> dict:
    """``config.json``: what the repository holds, for people and the Hub (which counts downloads by it)."""
    meta = run.meta
    return {"library_name": "nnssl", "nnssl_version": meta["nnssl_version"],
            "format": f"nnU-Net SSL checkpoint ({WEIGHTS_KEY} + {ADAPTATION_PLAN_KEY})",
            "checkpoint": FINAL_CHECKPOINT, "adaptation_plan": ADAPTATION_PLAN_FILE,
            "architecture": plan["architecture_plans"]["arch_class_name"], "method": meta["method"],
            "num_input_channels": meta["num_input_channels"], "patch_size": meta["patch_size"],
            "spacing": meta["spacing"]}


def _write_repository(folder: str, run: PretrainingRun, preview: str | None, options: CardOptions,
                      source: str) -> None:
    import torch

    from nnssl.checkpoints.files import save_atomic

    checkpoint = exported_checkpoint(run.checkpoint)
    save_atomic(checkpoint, os.path.join(folder, FINAL_CHECKPOINT))
    loaded = torch.load(os.path.join(folder, FINAL_CHECKPOINT), map_location="cpu", weights_only=True)
    if tuple(loaded) != EXPORTED_KEYS:  # the promise of the format, checked on what was written
        raise NnsslError(f"{folder}: the exported checkpoint holds {list(loaded)}, not {list(EXPORTED_KEYS)}")
    write_json_atomic(os.path.join(folder, ADAPTATION_PLAN_FILE), checkpoint[ADAPTATION_PLAN_KEY], indent=2)
    write_json_atomic(os.path.join(folder, CONFIG_FILE), repository_config(run, checkpoint[ADAPTATION_PLAN_KEY]))
    if run.has_progress_figure:
        shutil.copyfile(os.path.join(source, PROGRESS_FIGURE), os.path.join(folder, PROGRESS_FIGURE))
    if preview is not None:
        shutil.copyfile(preview, os.path.join(folder, PREVIEW_FILE))
    with open(os.path.join(folder, MODEL_CARD_FILE), "w") as f:
        f.write(model_card(run, options))


def _share(folder: str) -> None:
    """Permissions as for any new file (temporary files and folders are made private to their owner)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def export_run(run_folder: str, output: str, options: CardOptions) -> list[tuple[str, int]]:
    """Writes the repository of the finished run in ``run_folder`` to ``output``; returns (file, bytes) pairs.

    Raises:
        NnsslError: for an output folder that exists and is not empty or cannot be created, a malformed
            licence or repository id, and a folder that is not a finished nnssl_pretrain run; nothing is
            written then.
    """
    check_options(output, options)
    name = options.repo_id.split("/")[-1] if options.repo_id else os.path.basename(os.path.abspath(run_folder))
    run, preview = read_run(run_folder, name)
    output = os.path.abspath(output)
    parent, staging = os.path.dirname(output), None
    new_parent = first_missing(parent)  # the outermost folder this export creates: removed again if it fails
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
        _write_repository(staging, run, preview, options, run_folder)
        _share(staging)
        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked above)
        os.rename(staging, output)
    except BaseException:
        for folder in (staging, new_parent):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    files = sorted(os.listdir(output))
    logger.debug("exported %s to %s: %s", run_folder, output, ", ".join(files))
    return [(name, os.path.getsize(os.path.join(output, name))) for name in files]
