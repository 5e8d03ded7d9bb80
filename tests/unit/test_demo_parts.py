"""Parts of nnssl_demo that need no subprocess: settings, split, verdict, environment, work folder."""

from __future__ import annotations

import json
import os

import pytest

from nnssl.demo.report import verdict_line
from nnssl.demo.run_demo import _parse_args, prepare_work_folder, settings_from_args, write_split
from nnssl.demo.steps import subprocess_env


def test_settings_quick_and_overrides() -> None:
    full = settings_from_args(_parse_args([]))
    assert full.ssl_trainer == "nnSSLTrainer_10epochs_25iters"
    assert full.scratch_trainer == "nnUNetTrainer_10epochs_25iters"
    assert (full.num_train, full.num_val) == (2, 1)  # a few labelled volumes, fold 0 of a written split
    quick = settings_from_args(_parse_args(["--quick", "--pretrain-epochs", "1"]))
    assert quick.pretrain_epochs == 1 and quick.ssl_trainer.endswith("_noMirroring")


def test_split_trains_on_the_first_volumes_and_validates_on_the_rest(tmp_path) -> None:
    settings = settings_from_args(_parse_args([]))
    (tmp_path / "nnUNet_preprocessed" / "Dataset501_SyntheticLSM").mkdir(parents=True)
    with open(write_split(str(tmp_path), settings)) as f:
        assert json.load(f) == [{"train": ["case_000", "case_001"], "val": ["case_002"]}]


def test_verdict_line_says_whether_pretraining_paid() -> None:
    paid = verdict_line({"pretrained": {"mean": 0.61}, "scratch": {"mean": 0.6}})
    assert paid.startswith("verdict: pretraining paid") and "(+0.0100)" in paid
    lost = verdict_line({"pretrained": {"mean": 0.5}, "scratch": {"mean": 0.6}})
    assert "pretraining did NOT pay" in lost and "(-0.1000)" in lost


def test_subprocess_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    planning = subprocess_env(str(tmp_path), planning=True)
    assert "nnUNet_n_proc_DA" not in planning  # 0 crashes nnU-Net's planner
    assert planning["nnUNet_raw"] == os.path.join(str(tmp_path), "nnUNet_raw")
    training = subprocess_env(str(tmp_path), planning=False)
    assert training["nnUNet_n_proc_DA"] == "0" and training["nnUNet_compile"] == "false"


def test_prepare_work_folder(tmp_path) -> None:
    out = prepare_work_folder(str(tmp_path / "demo"))
    open(os.path.join(out, "old_file"), "w").close()
    out = prepare_work_folder(out)  # an earlier demo run is replaced
    assert not os.path.exists(os.path.join(out, "old_file"))
    other = tmp_path / "user_data"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        prepare_work_folder(str(other))
    assert (other / "keep.txt").exists()


def test_failed_step_reports_log(tmp_path, capsys) -> None:
    from nnssl.demo.steps import DemoStepError, StepRunner, print_failure

    (tmp_path / "logs").mkdir()
    runner = StepRunner(str(tmp_path), total_steps=1)
    with pytest.raises(DemoStepError) as info:
        runner.run("failing step", "fail", ["python", "-c", "import sys; print('boom'); sys.exit(3)"])
    assert info.value.log_file == os.path.join(str(tmp_path), "logs", "fail.log")
    print_failure(info.value)
    err = capsys.readouterr().err
    assert "failing step" in err and "boom" in err and "status 3" in err
