"""Runs the demo's steps: subprocesses with their output in log files, one line per step, timings."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from nnssl.nnunet_folders import PREPROCESSED_ENV, RAW_ENV, RESULTS_ENV

T = TypeVar("T")
TAIL_LINES = 40


class DemoStepError(Exception):
    """A demo step failed; carries the step's title and its log file (if any)."""

    def __init__(self, title: str, message: str, log_file: str | None = None) -> None:
        super().__init__(message)
        self.title = title
        self.log_file = log_file


def find_executable(name: str) -> str | None:
    """The console script ``name`` of this Python environment, else the one on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which(name)


def subprocess_env(out: str, planning: bool) -> dict[str, str]:
    """The environment of a step: nnU-Net folders inside ``out``, quiet single-process settings.

    ``nnUNet_n_proc_DA=0`` is set for training and prediction only: nnU-Net's planner calls
    ``torch.set_num_threads(nnUNet_n_proc_DA)`` and crashes on 0.
    """
    env = dict(os.environ)
    env.update(
        **{name: os.path.join(out, name) for name in (RAW_ENV, PREPROCESSED_ENV, RESULTS_ENV)},
        nnUNet_compile="false",
        nnUNet_def_n_proc="1",
        PYTHONUNBUFFERED="1",
        MPLBACKEND="Agg",
    )
    if planning:
        env.pop("nnUNet_n_proc_DA", None)
    else:
        env["nnUNet_n_proc_DA"] = "0"
    return env


def _display_path(path: str) -> str:
    """``path`` relative to the current folder when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


class StepRunner:
    """Numbers the steps, prints one line per step, records each step's time."""

    def __init__(self, out: str, total_steps: int) -> None:
        self.out = out
        self.total_steps = total_steps
        self.timings: list[tuple[str, float]] = []

    def _start(self, title: str, detail: str | None) -> float:
        suffix = f" ({detail})" if detail else ""
        print(f"[{len(self.timings) + 1}/{self.total_steps}] {title}{suffix} ...", end="", flush=True)
        return time.monotonic()

    def _done(self, title: str, start: float) -> None:
        elapsed = time.monotonic() - start
        self.timings.append((title, elapsed))
        print(f" done in {elapsed:.0f} s", flush=True)

    def call(self, title: str, function: Callable[[], T], detail: str | None = None) -> T:
        """Runs an in-process step."""
        start = self._start(title, detail)
        try:
            result = function()
        except Exception as e:
            print(" FAILED", flush=True)
            raise DemoStepError(title, f"{type(e).__name__}: {e}") from e
        self._done(title, start)
        return result

    def run(self, title: str, log_name: str, command: list[str], planning: bool = False) -> None:
        """Runs a command-line tool with its output in ``out/logs/<log_name>.log``."""
        log_file = os.path.join(self.out, "logs", log_name + ".log")
        start = self._start(title, f"log: {_display_path(log_file)}")
        executable = find_executable(command[0])
        if executable is None:
            print(" FAILED", flush=True)
            message = f"{command[0]}: command not found; is nnssl installed in this environment?"
            raise DemoStepError(title, message)
        env = subprocess_env(self.out, planning)
        with open(log_file, "w") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            returncode = subprocess.call(
                [executable, *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.out
            )
        if returncode != 0:
            print(" FAILED", flush=True)
            raise DemoStepError(title, f"{command[0]} exited with status {returncode}", log_file)
        self._done(title, start)

    def print_timings(self) -> None:
        """A table of the steps' times."""
        print("\nTime per step:")
        for title, seconds in self.timings:
            print(f"  {title:<32} {seconds:7.1f} s")


def print_failure(error: DemoStepError) -> None:
    """Prints the failed step, its log file and the log's last lines."""
    print(f"\nnnssl demo FAILED at step '{error.title}': {error}", file=sys.stderr)
    if error.log_file and os.path.isfile(error.log_file):
        with open(error.log_file, errors="replace") as f:
            tail = f.readlines()[-TAIL_LINES:]
        print(f"log file: {error.log_file}; its last {len(tail)} lines:", file=sys.stderr)
        sys.stderr.write("".join(tail))
    elif error.__cause__ is not None:
        import traceback

        traceback.print_exception(error.__cause__, file=sys.stderr)
