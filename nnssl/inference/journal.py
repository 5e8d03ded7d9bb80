"""The journal of finished blocks: one append-only file per process, one line per block.

A line is appended (and flushed to disk) only after every chunk of its block is written, so a run killed at
any moment has journalled a subset of the finished blocks; ``--continue`` recomputes the rest, at most the
blocks that were in flight. A line torn by the kill is ignored.
"""

from __future__ import annotations

import os

SKIPPED, PREDICTED = "skipped", "predicted"


def journal_file(folder: str, rank: int) -> str:
    return os.path.join(folder, f"rank{rank}.log")


def finished_blocks(folder: str) -> dict[int, str]:
    """Block index -> how it was finished, from every process's journal in ``folder``."""
    finished: dict[int, str] = {}
    if not os.path.isdir(folder):
        return finished
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(folder, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and parts[1] in (SKIPPED, PREDICTED) and line.endswith("\n"):
                    finished[int(parts[0])] = parts[1]
    return finished


class Journal:
    """Appends finished blocks to this process's journal file."""

    def __init__(self, folder: str, rank: int) -> None:
        os.makedirs(folder, exist_ok=True)
        self.file = open(journal_file(folder, rank), "a")  # noqa: SIM115 (open for the whole case)

    def record(self, index: int, how: str) -> None:
        self.file.write(f"{index} {how}\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
