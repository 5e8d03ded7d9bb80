"""Worker processes that end with the process that started them.

A SIGKILLed main process runs no clean-up, so its data-augmentation and preprocessing workers would live on
(and hold memory and cores) without this. On Linux each worker asks the kernel for SIGKILL when its parent
ends (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Called first in a worker process: the kernel kills it as soon as its parent process ends.

    A no-op in a main process (its parent is a shell or a test runner, not nnssl) and off Linux.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # the parent ended before the request took effect
        os._exit(1)
