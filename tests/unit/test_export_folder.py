"""nnssl_export writes the repository next to the output folder and renames it into place: a failure leaves
nothing, not even the parent folders the export created."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnssl.checkpoints import export
from nnssl.checkpoints.model_card import CardOptions


def test_a_failed_export_removes_what_it_created(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "read_run", lambda folder, name: (None, None))  # a finished run, as far as it goes

    def write_half(staging: str, *args) -> None:
        (Path(staging) / "checkpoint_final.pth").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "_write_repository", write_half)
    (tmp_path / "models").mkdir()
    out = tmp_path / "models" / "lab" / "hub" / "lsm_mae"
    with pytest.raises(OSError, match="No space left"):
        export.export_run(str(tmp_path / "run"), str(out), CardOptions(license="mit"))
    assert list((tmp_path / "models").iterdir()) == []
