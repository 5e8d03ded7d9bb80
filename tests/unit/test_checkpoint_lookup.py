"""find_pretrained_checkpoint: env override, plans key, the nnsslPretrain_* convention and its errors."""

from __future__ import annotations

import os

import pytest

from nnssl.checkpoints.lookup import ENV_VAR, PLANS_KEY, find_pretrained_checkpoint
from nnssl.errors import NnsslError

DATASET = "Dataset900_Tiny"
PLANS = {"dataset_name": DATASET, "plans_name": "nnUNetPlans"}


def make_run(root, name: str, finished: bool = True) -> str:
    folder = root / DATASET / name
    folder.mkdir(parents=True)
    (folder / ("checkpoint_final.pth" if finished else "checkpoint_latest.pth")).write_bytes(b"x")
    return str(folder)


@pytest.fixture
def results(tmp_path, monkeypatch):
    root = tmp_path / "nnUNet_results"
    root.mkdir()
    monkeypatch.setenv("nnUNet_results", str(root))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return root


def test_convention_single_folder(results):
    folder = make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_fullres")
    make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_lowres")  # other configuration: ignored
    make_run(results, "nnsslPretrain_mae__otherPlans__3d_fullres")  # other plans: ignored
    found = find_pretrained_checkpoint(PLANS, "3d_fullres")
    assert found.path == os.path.join(folder, "checkpoint_final.pth")
    assert "only pretraining" in found.source


def test_convention_several_folders_is_an_error(results):
    make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_fullres")
    make_run(results, "nnsslPretrain_simclr__nnUNetPlans__3d_fullres")
    with pytest.raises(NnsslError) as err:
        find_pretrained_checkpoint(PLANS, "3d_fullres")
    message = str(err.value)
    assert "nnsslPretrain_mae__" in message and "nnsslPretrain_simclr__" in message and ENV_VAR in message


def test_convention_none_says_how_to_pretrain(results):
    make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_fullres", finished=False)
    with pytest.raises(NnsslError) as err:
        find_pretrained_checkpoint(PLANS, "3d_fullres")
    message = str(err.value)
    assert f"nnssl_pretrain -d {DATASET} -i" in message and ENV_VAR in message
    assert "unfinished" in message and "\n" not in message


def test_env_override_file_and_folder_beat_everything(results, tmp_path, monkeypatch):
    make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_fullres")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "checkpoint_final.pth").write_bytes(b"x")
    (other / "my.pth").write_bytes(b"x")
    plans = {**PLANS, PLANS_KEY: "does/not/matter.pth"}
    monkeypatch.setenv(ENV_VAR, str(other))
    found = find_pretrained_checkpoint(plans, "3d_fullres")
    assert found.path == str(other / "checkpoint_final.pth") and ENV_VAR in found.source
    monkeypatch.setenv(ENV_VAR, str(other / "my.pth"))
    assert find_pretrained_checkpoint(plans, "3d_fullres").path == str(other / "my.pth")


def test_env_pointing_nowhere_names_the_variable(results, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(NnsslError, match=ENV_VAR):
        find_pretrained_checkpoint(PLANS, "3d_fullres")


def test_plans_key_relative_and_absolute(results, tmp_path):
    folder = make_run(results, "nnsslPretrain_mae__nnUNetPlans__3d_fullres")
    make_run(results, "nnsslPretrain_simclr__nnUNetPlans__3d_fullres")  # convention would be ambiguous
    relative = os.path.relpath(os.path.join(folder, "checkpoint_final.pth"), results)
    found = find_pretrained_checkpoint({**PLANS, PLANS_KEY: relative}, "3d_fullres")
    assert found.path == os.path.join(folder, "checkpoint_final.pth") and PLANS_KEY in found.source
    absolute = tmp_path / "abs.pth"
    absolute.write_bytes(b"x")
    assert find_pretrained_checkpoint({**PLANS, PLANS_KEY: str(absolute)}, "3d_fullres").path == str(absolute)
    with pytest.raises(NnsslError, match=PLANS_KEY):
        find_pretrained_checkpoint({**PLANS, PLANS_KEY: "gone/checkpoint_final.pth"}, "3d_fullres")


def test_results_unset(monkeypatch):
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(NnsslError, match="nnUNet_results is not set"):
        find_pretrained_checkpoint(PLANS, "3d_fullres")
