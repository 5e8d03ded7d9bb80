"""nnssl_demo --quick end to end: real CLIs in subprocesses (a few minutes on 2 CPU cores)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cli


def _missing_parts() -> list[str]:
    needed = ("nnssl.cli.pretrain", "nnssl.trainers.variants")
    return [name for name in needed if importlib.util.find_spec(name) is None]


@pytest.mark.timeout(900)
def test_demo_quick(tmp_path) -> None:
    missing = _missing_parts()
    if missing:
        pytest.skip(f"not built yet: {', '.join(missing)}")
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "nnssl.demo.run_demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "CPU demo: adding a small configuration 3d_cpu" in result.stdout
    assert "pretrained (MAE)" in result.stdout and "from scratch" in result.stdout
    per_case = json.loads((out / "dice.json").read_text())
    assert set(per_case) == {"pretrained", "scratch"}
    for scores in per_case.values():
        assert all(0.0 <= s <= 1.0 for s in scores.values())
