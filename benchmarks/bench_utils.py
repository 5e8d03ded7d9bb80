"""Helpers shared by the benchmarks: memory of a whole process tree, sampled while a command runs.

PSS (proportional set size) rather than RSS: worker processes share pages (torch, the model, the page cache
of mapped files), and summing their RSS would count those pages once per process.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable

GIB = 1024**3


def _children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def tree_pss_bytes(root: int) -> int:
    """Summed proportional set size of ``root`` and all its descendants (Linux /proc)."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
        stack.extend(_children(pid))
    return total


def run_with_peaks(command: list[str], env: dict, samplers: dict[str, Callable[[int], float]],
                   interval: float = 0.25) -> tuple[int, dict[str, float], str, float]:
    """Runs ``command``; every ``interval`` s calls each sampler with the process id and keeps its maximum.

    Returns (exit code, {sampler name: peak}, combined stdout and stderr, wall seconds of the process).
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = dict.fromkeys(samplers, 0.0)

    def watch() -> None:
        while process.poll() is None:
            for name, sample in samplers.items():
                peaks[name] = max(peaks[name], sample(process.pid))
            time.sleep(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = process.communicate()[0]
    seconds = time.perf_counter() - started
    watcher.join()
    return process.returncode, peaks, output, seconds


def run_with_peak_pss(command: list[str], env: dict) -> tuple[int, float, str]:
    """(exit code, peak summed PSS in GiB, combined output) of ``command``."""
    code, peaks, output, _ = run_with_peaks(command, env, {"pss": tree_pss_bytes})
    return code, peaks["pss"] / GIB, output


def folder_bytes(folder: str) -> int:
    """Bytes of all files under ``folder`` (a Zarr store is a folder of chunk files)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
