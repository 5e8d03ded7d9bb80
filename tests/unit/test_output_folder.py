"""The output-folder lock: one holder, the next one refused with the holder's PID, released by the kernel when the
holder dies (even by SIGKILL), and no folder left behind by a run that wrote nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from nnssl.errors import NnsslError
from nnssl.output_folder import LOCK_FILE, OutputLock

HOLD = "import sys, time; from nnssl.output_folder import OutputLock; OutputLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(600)"


def test_second_holder_is_refused_until_the_first_releases(tmp_path):
    out = tmp_path / "run"
    with OutputLock(str(out)) as first:
        assert first.created and (out / LOCK_FILE).is_file()
        with pytest.raises(NnsslError, match=rf"PID {os.getpid()} on .*\(kill {os.getpid()}\)"):
            OutputLock(str(out)).acquire()
        (out / "result.txt").write_text("kept")
    assert not (out / LOCK_FILE).exists() and (out / "result.txt").is_file()
    with OutputLock(str(out)) as again:
        assert not again.created


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    out = tmp_path / "results" / "Dataset501_X" / "run"
    with pytest.raises(NnsslError), OutputLock(str(out)):
        raise NnsslError("a bad input found after the lock was taken")
    assert not (tmp_path / "results").exists()


def test_below_a_file(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(NnsslError, match="cannot create the output folder"):
        OutputLock(str(tmp_path / "a_file" / "sub")).acquire()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NnsslError, match=f"PID {holder.pid} "):
            OutputLock(str(out)).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_FILE).is_file()  # the file may stay; the lock does not
    with OutputLock(str(out)) as lock:
        assert not lock.created
