"""A standalone run (flow 2) with data-augmentation workers, SIGKILLed once training runs: no process it
started lives on; and nnU-Net's planning output went to the run's log file, not to the terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN

pytestmark = pytest.mark.cli

PLANNER_DUMP = "3D fullres U-Net configuration"  # what nnU-Net's ExperimentPlanner prints with print()


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, their children, ...), from /proc."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += sorted(children - found)
            found |= children
    return found


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed child stays a zombie until someone reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def killed_run(nnunet, unlabeled_folder, tmp_path_factory) -> dict:
    """Starts the run, waits until training runs with 2 workers, SIGKILLs it; returns what the tests need."""
    out = nnunet.root / "killed_with_workers"
    folder = tmp_path_factory.mktemp("killed")
    stdout_file, stderr_file = folder / "stdout.txt", folder / "stderr.txt"
    args = [str(BIN / "nnssl_pretrain"), "-i", str(unlabeled_folder), "-o", str(out), "--features-per-stage", "8",
            "16", "32", "--patch-size", "16", "32", "32", "-b", "2", "--epochs", "50", "--iterations-per-epoch",
            "50", "--val-iterations", "1", "-device", "cpu", "--num-workers", "2", "--no-pbar"]
    with open(stdout_file, "w") as stdout, open(stderr_file, "w") as stderr:
        process = subprocess.Popen(args, env=nnunet.env(training=False), stdout=stdout, stderr=stderr)
    children: set[int] = set()  # collected once training runs: planning's short-lived helpers are gone by then
    deadline = time.time() + 400
    log = out / "training_log.txt"
    while process.poll() is None and time.time() < deadline:
        if log.is_file() and "pretraining mae on" in log.read_text():
            children = descendants(process.pid)
            if len(children) >= 2:
                break
        time.sleep(0.2)
    assert process.poll() is None, stderr_file.read_text()[-3000:]
    time.sleep(2)  # the workers are producing batches
    children |= descendants(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return {"children": children, "stdout": stdout_file.read_text(), "log": log.read_text()}


def test_no_worker_outlives_a_killed_run(killed_run):
    children = killed_run["children"]
    assert len(children) >= 2, children  # the two augmentation workers at least
    deadline = time.time() + 30
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], "worker processes outlived the killed run"


def test_planner_output_goes_to_the_log_file(killed_run):
    assert PLANNER_DUMP not in killed_run["stdout"], killed_run["stdout"][-3000:]
    assert PLANNER_DUMP in killed_run["log"]
