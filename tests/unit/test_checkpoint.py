import os

import numpy as np
import pytest
import torch

from nnssl.checkpoints import files as ckpt
from nnssl.errors import NnsslError


def sample_checkpoint():
    return {
        "network_weights": {"encoder.w": torch.randn(3, 3)},
        "rng": np.arange(5, dtype=np.uint32),
        "meta": {"spacing": (1.0, 0.5, 0.5), "name": "x", "n": np.int64(3), "nested": [(1, 2), None]},
    }


def test_round_trip_loads_with_weights_only(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    original = sample_checkpoint()
    ckpt.save_atomic(original, str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(loaded["network_weights"]["encoder.w"], original["network_weights"]["encoder.w"])
    assert loaded["meta"] == {"spacing": [1.0, 0.5, 0.5], "name": "x", "n": 3, "nested": [[1, 2], None]}
    assert loaded["rng"].tolist() == [0, 1, 2, 3, 4]
    assert ckpt.load_checkpoint(str(tmp_path))["meta"]["name"] == "x"  # folder -> checkpoint_final.pth


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    ckpt.save_atomic({"network_weights": {"a": torch.zeros(1)}, "epoch": 1}, str(path))

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"network_weights": {"a": torch.ones(1)}, "epoch": 2}, str(path))
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".tmp_checkpoint_latest.pthabc").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("y")
    ckpt.remove_stale_temporaries(str(tmp_path))
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_clear_errors(tmp_path):
    with pytest.raises(NnsslError, match="no checkpoint_final.pth"):
        ckpt.resolve_checkpoint_path(str(tmp_path))
    with pytest.raises(NnsslError, match="no such checkpoint"):
        ckpt.resolve_checkpoint_path(str(tmp_path / "missing.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(NnsslError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(str(tmp_path / "bad.pth"))
