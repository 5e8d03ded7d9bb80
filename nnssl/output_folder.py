"""An output folder that one process writes: checked before any work, created on demand, locked while written.

``nnssl_pretrain`` and ``nnssl_predict`` resume from the files in their output folder (``--continue``). Two
processes on one folder (a job scheduler resubmitting a job that still runs) would both resume from the same
files and overwrite each other's. So each holds an exclusive ``fcntl.flock`` on ``<folder>/.nnssl.lock`` while
it runs, and a second process is refused with the holder's PID.

Why ``flock`` and not a PID file: the kernel drops the lock when the last file descriptor of the holder's open
file closes, which includes death by any signal (``kill -9``, the OOM killer). A killed run therefore never
leaves a stale lock, and the next ``--continue`` needs no clean-up and no guess whether a PID is still alive.
The file itself may outlive a killed run; it is only the object the lock is held on. Worker processes forked
by the holder share the lock and end with it (``nnssl.worker_processes``); ``O_CLOEXEC`` keeps it out of
programs they execute.

Under ``torchrun`` global rank 0 alone holds the lock, for the whole launch: it takes it before it joins the
process group, and the other ranks write only after they joined it (``nnssl.distributed``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from types import TracebackType

from nnssl import distributed
from nnssl.errors import NnsslError

LOCK_FILE = ".nnssl.lock"


def check_creatable(folder: str) -> None:
    """A one-line error, before any work, when ``folder`` cannot be created or written to."""
    existing = os.path.abspath(folder)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NnsslError(f"{folder}: cannot create the output folder: {existing} is not a folder; "
                         "choose another output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NnsslError(f"{folder}: cannot create the output folder: {existing} is not writable; "
                         "choose another output folder")


def first_missing(folder: str) -> str | None:
    """The outermost folder of ``folder``'s path that does not exist yet (``folder`` itself at the most)."""
    missing = None
    path = os.path.abspath(folder)
    while not os.path.isdir(path):
        missing, path = path, os.path.dirname(path)
    return missing


class OutputLock:
    """``with OutputLock(folder):`` the body runs as the only writer of ``folder`` (created if missing).

    When the lock created ``folder`` and the run left nothing in it, the folder goes again on release: a run
    refused or failed before writing leaves nothing behind. ``created`` tells whether this run created it.
    """

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.created = False
        self._created_top: str | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock (creating the folder if needed) or raises an ``NnsslError`` naming the holder's PID.
        In a torchrun process other than rank 0 it does nothing."""
        if not distributed.is_main():
            return
        check_creatable(self.folder)
        while self._fd is None:
            top = first_missing(self.folder)
            os.makedirs(self.folder, exist_ok=True)
            self._created_top = self._created_top or top
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_created_folders()
                raise NnsslError(self._refusal(holder)) from None
            if _same_file(fd, self.path):
                self._fd = fd
            else:  # the previous holder removed the file between our open and flock: lock the new one
                os.close(fd)
        self.created = self._created_top is not None
        os.ftruncate(self._fd, 0)
        program = os.path.basename(sys.argv[0]) or "python"  # nnssl_pretrain, nnssl_predict, ...
        os.write(self._fd, f"{os.getpid()} {socket.gethostname()} {program}\n".encode())

    def release(self) -> None:
        """Removes the lock file (while still holding the lock, so that no one locks a file about to go) and the
        folders the lock created when they are empty, then drops the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):  # a failed fresh run removed its folder itself
            os.unlink(self.path)
        self._remove_created_folders()
        os.close(self._fd)
        self._fd = None

    def _remove_created_folders(self) -> None:
        if self._created_top is None:
            return
        path = self.folder
        while True:
            try:
                os.rmdir(path)
            except OSError:
                return  # not empty: the run wrote something that stays (or a folder someone else created)
            if path == self._created_top:
                return
            path = os.path.dirname(path)

    def _refusal(self, holder: tuple[str, str, str] | None) -> str:
        if holder is None:
            return (f"{self.folder}: another process is writing this output folder (lock {self.path}); wait "
                    f"until it ends, or stop it and resume with --continue")
        pid, host, program = holder
        return (f"{self.folder}: {program} with PID {pid} on {host} is writing this output folder; wait until it "
                f"ends, or stop it (kill {pid}) and resume with --continue")

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> tuple[str, str, str] | None:
    """(PID, host, program) that the holder wrote; None while it has not written them yet."""
    fields = os.pread(fd, 1024, 0).decode(errors="replace").split()
    return (fields[0], fields[1], fields[2]) if len(fields) >= 3 else None
