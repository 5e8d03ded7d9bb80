"""What a run's nnssl_run.json records besides the request (the model card reads it): the images pretrained on,
from headers only, and every start of the run with its hardware; rewriting it keeps what it does not set."""

from __future__ import annotations

import json

import torch

from nnssl.checkpoints.layout import RUN_FILE
from nnssl.pretraining.engine import run_folder
from nnssl.pretraining.engine.inputs import describe_cases
from nnssl.pretraining.engine.reporting import session_record
from nnssl.volumes.discovery import discover_cases
from tests.synthetic import write_unlabeled_folder


def test_cases_are_described_from_headers(tmp_path):
    write_unlabeled_folder(str(tmp_path / "nifti"), num_cases=2, shape=(8, 16, 24), num_channels=2)
    write_unlabeled_folder(str(tmp_path / "tiff"), num_cases=1, shape=(6, 10, 12), file_ending=".tif",
                           naming="plain", seed=7)
    nifti = describe_cases(discover_cases([str(tmp_path / "nifti")]))["cases"]
    assert nifti[1] == {"identifier": "lsm_001", "format": ".nii.gz", "channels": 2, "shape": [8, 16, 24]}
    assert describe_cases(discover_cases([str(tmp_path / "tiff")]))["cases"] == [
        {"identifier": "lsm_000", "format": ".tif", "channels": 1, "shape": [6, 10, 12]}]


def test_sessions_are_appended_and_other_keys_kept(tmp_path):
    run_folder.write_run_file(str(tmp_path), {"request": {"epochs": 2}, "data": {"cases": []}})
    run_folder.record_progress(str(tmp_path), {"epochs_done": 1})
    first = session_record(torch.device("cpu"), 1)
    run_folder.record_session(str(tmp_path), first)
    run_folder.write_run_file(str(tmp_path), {"request": {"epochs": 2, "continue_run": True}})  # a --continue
    run_folder.record_session(str(tmp_path), {**first, "started": "later"})
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert run["request"]["continue_run"] and run["progress"] == {"epochs_done": 1}
    assert [s["started"] for s in run["sessions"]] == [first["started"], "later"]
    assert first["device"] == "cpu" and first["device_name"] and first["processes"] == 1
    assert first["cpu_count"] >= 1 and first["torch"] == torch.__version__
