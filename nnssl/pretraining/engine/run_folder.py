"""The output folder of a run: where it is, whether it holds another run, what ``--continue`` resumes."""

from __future__ import annotations

import glob
import json
import os

from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.layout import FINAL_CHECKPOINT, LATEST_CHECKPOINT, RUN_FILE
from nnssl.errors import NnsslError
from nnssl.output_folder import check_creatable


def find_dataset_folder(root: str, dataset: str) -> str | None:
    """``501`` or ``Dataset501_Name`` -> the matching ``DatasetXXX_*`` folder under ``root`` (no nnU-Net import)."""
    if dataset.startswith("Dataset"):
        path = os.path.join(root, dataset)
        return path if os.path.isdir(path) else None
    if not dataset.isdigit():
        return None
    matches = sorted(glob.glob(os.path.join(root, f"Dataset{int(dataset):03d}_*")))
    return matches[0] if matches else None


def holds_run(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in (RUN_FILE, FINAL_CHECKPOINT, LATEST_CHECKPOINT))


def check_fresh_output(folder: str) -> None:
    check_creatable(folder)
    if holds_run(folder):
        raise NnsslError(
            f"{folder}: holds another pretraining run; resume it with --continue or choose another output folder"
        )


def read_run_file(folder: str) -> dict:
    path = os.path.join(folder, RUN_FILE)
    if not os.path.isfile(path):
        raise NnsslError(f"{folder}: no pretraining run to continue ({RUN_FILE} missing); start one without --continue")
    with open(path) as f:
        return json.load(f)


def write_run_file(folder: str, run: dict) -> None:
    """Writes the keys of ``run`` into the run file, keeping those it does not set (a resumed run keeps the
    progress and the sessions recorded before)."""
    write_json_atomic(os.path.join(folder, RUN_FILE), {**_stored_run(folder), **run})


def _stored_run(folder: str) -> dict:
    """The run file's contents ({} when there is none yet)."""
    path = os.path.join(folder, RUN_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def recorded_progress(folder: str) -> dict:
    """What ``record_progress`` stored in the run file of ``folder`` (empty before the first epoch's end)."""
    return _stored_run(folder).get("progress", {})


def record_progress(folder: str, progress: dict) -> None:
    """Stores ``progress`` (the losses and learning figures of the last epoch) under ``"progress"`` in the
    run file, keeping what it holds (the request and settings)."""
    write_run_file(folder, {"progress": progress})


def record_session(folder: str, session: dict) -> None:
    """Appends ``session`` (when it started, on what hardware: ``reporting.session_record``) to the run file's
    ``"sessions"``: one entry per start, the first and every ``--continue``."""
    write_run_file(folder, {"sessions": [*_stored_run(folder).get("sessions", []), session]})
