"""nnssl_pretrain under torchrun: two CPU processes (gloo) train one DistributedDataParallel run, rank 0
alone writes, and a run killed mid-epoch resumes with --continue in both processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import BIN, NnunetEnv

pytestmark = pytest.mark.cli

RUN_OPTIONS = ["--features-per-stage", "8", "16", "32", "--patch-size", "16", "32", "32", "-b", "2", "-device", "cpu",
               "--num-workers", "0", "--no-pbar"]
LAUNCH_TIMEOUT = 400  # seconds; two processes importing torch and nnU-Net on a loaded 2-core machine


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> NnunetEnv:
    """The project's way of running the CLIs (flow 2 needs no nnU-Net dataset)."""
    return NnunetEnv(tmp_path_factory.mktemp("distributed"))


def _torchrun(*args: str) -> list[str]:
    return ["torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", str(BIN / "nnssl_pretrain"), *args]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_batch_split_follows_nnunet():
    from nnssl.errors import NnsslError
    from nnssl.pretraining.engine.schedule import local_batch_size

    assert [local_batch_size(5, 2, r) for r in range(2)] == [3, 2]
    assert [local_batch_size(7, 3, r) for r in range(3)] == [3, 2, 2]
    assert [local_batch_size(4, 4, r) for r in range(4)] == [1, 1, 1, 1]
    assert local_batch_size(2, 1, 0) == 2
    with pytest.raises(NnsslError, match="smaller than the number of processes"):
        local_batch_size(1, 2, 0)


def test_single_process_helpers_are_no_ops(monkeypatch):
    from nnssl import distributed

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    distributed.init("cpu")
    distributed.barrier()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.run_on_main(lambda: 42, "testing") == 42
    assert distributed.all_gather("x") == ["x"]
    assert distributed.weighted_mean(0.25, 3) == 0.25
    distributed.cleanup()


def test_two_processes_train_one_run(launcher, unlabeled_folder):
    out = launcher.root / "ddp_run"
    result = launcher.run(*_torchrun("-i", str(unlabeled_folder), "-o", str(out), *RUN_OPTIONS, "--epochs", "2",
                                     "--iterations-per-epoch", "3", "--val-iterations", "1"),
                          timeout=LAUNCH_TIMEOUT, OMP_NUM_THREADS="1")
    checkpoint = _load(out / "checkpoint_final.pth")
    assert not [k for k in checkpoint["network_weights"] if k.startswith("module.") or "_orig_mod" in k]
    assert checkpoint["nnssl_metadata"]["world_size"] == 2
    assert checkpoint["nnssl_metadata"]["global_batch_size"] == 2
    assert checkpoint["current_epoch"] == 2 and len(checkpoint["rank_states"]) == 2
    log = (out / "training_log.txt").read_text()
    for line in ("pretraining mae on", "epoch 0:", "epoch 1:", "done:"):
        assert log.count(line) == 1, log  # rank 0 alone writes the log
    assert "global batch 2 over 2 processes (1 in this one)" in log
    assert result.stdout.count("pretrained checkpoint") == 1
    assert (out / "progress.png").is_file() and (out / "previews" / "epoch_0002.png").is_file()
    assert not (out / "checkpoint_latest.pth").exists()


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    children = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(p) for p in path.read_text().split()]
    return children


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL the workers (torchrun starts each in a session of its own), then torchrun itself."""
    workers = _children(process.pid)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if workers:
        process.kill()
    else:  # no /proc children list: torchrun's own shutdown stops the workers
        process.terminate()
    process.wait(timeout=120)
    deadline = time.time() + 60
    while not all(_gone(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)


def _wait_for_mid_epoch_checkpoint(latest: Path, process: subprocess.Popen) -> dict:
    """The first checkpoint_latest written inside the second epoch."""
    deadline = time.time() + LAUNCH_TIMEOUT
    while process.poll() is None and time.time() < deadline:
        if latest.exists():
            with contextlib.suppress(OSError, RuntimeError, EOFError):
                state = _load(latest)
                if state["current_epoch"] == 1 and state["iteration_in_epoch"] > 0:
                    return state
        time.sleep(0.1)
    raise AssertionError(f"no mid-epoch checkpoint_latest before the run ended (exit code {process.poll()})")


def test_killed_run_continues_in_both_processes(launcher, unlabeled_folder):
    out = launcher.root / "ddp_killed"
    args = _torchrun("-i", str(unlabeled_folder), "-o", str(out), *RUN_OPTIONS, "--epochs", "2",
                     "--iterations-per-epoch", "20", "--save-every-iterations", "2", "--val-iterations", "1")
    process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=launcher.env(OMP_NUM_THREADS="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=launcher.root)
    try:
        state = _wait_for_mid_epoch_checkpoint(out / "checkpoint_latest.pth", process)
    finally:
        _kill_launch(process)
    assert len(state["rank_states"]) == 2
    assert not (out / "checkpoint_final.pth").exists()
    launcher.run(*args, "--continue", timeout=LAUNCH_TIMEOUT, OMP_NUM_THREADS="1")
    final = _load(out / "checkpoint_final.pth")
    assert final["current_epoch"] == 2
    assert len(final["logging"]["train_losses"]) == 2 and len(final["logging"]["val_losses"]) == 2
    log = (out / "training_log.txt").read_text()
    assert log.count("resumed from") == 1
    assert log.count("epoch 0:") == 1 and log.count("epoch 1:") == 1, log
