"""Shared behaviour of nnssl's command-line tools: logging set-up and one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from nnssl.errors import NnsslError


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("nnssl")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def run_cli(tool: str, body: Callable[[], int | None]) -> int:
    """Runs ``body``; an ``NnsslError`` becomes ``<tool>: error: <message>`` and exit code 2, no traceback."""
    try:
        return body() or 0
    except NnsslError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        return 130
