"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A crash or kill while writing leaves the previous file untouched; an exception leaves no temporary
file (a SIGKILL can: ``.tmp_<name>...`` files, which ``checkpoint.remove_stale_temporaries`` clears).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def write_atomic(path: str, write: Callable[[IO[Any]], None], binary: bool = True) -> None:
    """Calls ``write(file)`` on a temporary file and moves it to ``path`` once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_json_atomic(path: str, obj: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """``obj`` as JSON at ``path``, written atomically: the one way a run, journal or plans file is written."""
    write_atomic(path, lambda f: json.dump(obj, f, indent=indent, sort_keys=sort_keys), binary=False)
