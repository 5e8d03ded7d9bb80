"""A pretraining run killed with SIGKILL mid-epoch resumes with --continue and finishes; while it ran, a second
run on its output folder was refused."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from tests.conftest import BIN

pytestmark = pytest.mark.cli


def test_sigkill_then_continue(nnunet, unlabeled_folder):
    out = nnunet.root / "killed_run"
    args = [str(BIN / "nnssl_pretrain"), "-i", str(unlabeled_folder), "-o", str(out), "--features-per-stage", "8",
            "16", "32", "--patch-size", "16", "32", "32", "-b", "2", "--epochs", "3", "--iterations-per-epoch", "6",
            "--save-every-iterations", "2", "--val-iterations", "1", "-device", "cpu", "--num-workers", "0",
            "--no-pbar"]
    process = subprocess.Popen(args, env=nnunet.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoint_latest.pth"
    deadline = time.time() + 300
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert latest.exists(), "no checkpoint_latest before the deadline"
    os.kill(process.pid, signal.SIGSTOP)  # alive and holding the output folder while a second run is tried
    try:
        second = nnunet.run("nnssl_pretrain", *args[1:], "--continue", check=False)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr[-3000:]
    assert f"with PID {process.pid} " in second.stderr and "is writing this output folder" in second.stderr
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert state["current_epoch"] < 3
    nnunet.run("nnssl_pretrain", *args[1:], "--continue")
    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert final["current_epoch"] == 3
    assert len(final["logging"]["train_losses"]) == 3
    again = nnunet.run("nnssl_pretrain", "-i", str(unlabeled_folder), "-o", str(out), "--continue", "-device", "cpu")
    assert "already finished" in again.stderr
