"""Model repositories as a pretraining source (nnssl.checkpoints.hub): references, downloads into
$nnssl_pretrained_models/<org>_<repo> from a Hub on 127.0.0.1 (tests/fake_hub.py), offline use, and one-line
errors that leave nothing behind."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch
from huggingface_hub import constants

from nnssl.checkpoints.hub import (
    RepositoryReference,
    fetch_repository,
    parse_repository_reference,
    recorded_commit,
)
from nnssl.checkpoints.lookup import ENV_VAR, PLANS_KEY, find_pretrained_checkpoint
from nnssl.errors import NnsslError
from tests.ecosystem_checkpoints import ecosystem_checkpoint
from tests.fake_hub import FakeHub

REPO = "nnssl-tests/tiny"


def write_repository(folder, arch_class_name: str = "PlainConvUNet", seed: int = 0) -> dict:
    """A repository as nnssl_export lays it out: checkpoint, its adaptation plan as JSON, config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = ecosystem_checkpoint("PlainConvUNet", seed=seed)
    plan = checkpoint["nnssl_adaptation_plan"]
    plan["architecture_plans"]["arch_class_name"] = arch_class_name
    if arch_class_name.startswith("Primus"):
        plan["architecture_plans"].update(arch_kwargs=None, arch_kwargs_requiring_import=None)
    torch.save(checkpoint, folder / "checkpoint_final.pth")
    (folder / "adaptation_plan.json").write_text(json.dumps(plan))
    (folder / "config.json").write_text("{}")
    return checkpoint


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A Hub on 127.0.0.1 that huggingface_hub talks to (it reads HF_ENDPOINT once, at import: patched here)."""
    fake = FakeHub()
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("nnssl_pretrained_models", str(tmp_path / "models"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield fake
    fake.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("https://huggingface.co/org/repo", RepositoryReference("org/repo")),
    ("https://huggingface.co/org/repo/", RepositoryReference("org/repo")),
    ("https://huggingface.co/org/repo@v1.0", RepositoryReference("org/repo", "v1.0")),
    ("https://huggingface.co/org/repo/tree/dev", RepositoryReference("org/repo", "dev")),
    ("hf://AnonRes/ResEncL-OpenMind-MAE", RepositoryReference("AnonRes/ResEncL-OpenMind-MAE")),
    ("hf://org/repo@" + "a" * 40, RepositoryReference("org/repo", "a" * 40)),
    ("/models/run/checkpoint_final.pth", None),
    ("http://huggingface.co/org/repo", None),  # not the Hub's address: a (missing) path
])
def test_references(value, expected):
    assert parse_repository_reference(value) == expected


@pytest.mark.parametrize("value", ["https://huggingface.co/org", "hf://org/repo/extra", "hf://org/repo@",
                                   "https://huggingface.co/org/re po",
                                   # names the Hub refuses (huggingface_hub's validate_repo_id)
                                   "hf://my-lab/lsm--mae", "hf://my-lab/lsm..mae", "hf://my-lab/lsm-",
                                   "hf://my-lab/lsm.git", "hf://-lab/lsm", "hf://my-lab/" + "a" * 97])
def test_malformed_references_say_how_to_write_one(value):
    with pytest.raises(NnsslError, match="not a model repository reference; write https://huggingface.co/<org>/<repo>"):
        parse_repository_reference(value)


def test_downloaded_once_into_nnunet_masters_folder(hub, tmp_path):
    write_repository(tmp_path / "repo")
    commit = hub.publish(REPO, str(tmp_path / "repo"))
    fetched = fetch_repository(parse_repository_reference(f"https://huggingface.co/{REPO}"))
    folder = tmp_path / "models" / "nnssl-tests_tiny"
    assert fetched.checkpoint == str(folder / "checkpoint_final.pth")
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
        "adaptation_plan.json", "checkpoint_final.pth", "config.json"}
    assert fetched.commit == commit and fetched.pinned == f"hf://{REPO}@{commit}"
    assert fetched.describe() == f"https://huggingface.co/{REPO} at revision {commit}"
    again = fetch_repository(parse_repository_reference(f"hf://{REPO}"))
    assert again.commit == commit and hub.downloads("checkpoint_final.pth") == 1  # asked, not downloaded again

    write_repository(tmp_path / "repo", seed=1)
    newer = hub.publish(REPO, str(tmp_path / "repo"))
    assert fetch_repository(RepositoryReference(REPO)).commit == newer != commit
    assert hub.downloads("checkpoint_final.pth") == 2
    pinned = fetch_repository(RepositoryReference(REPO, commit))  # a pinned commit brings the old files back
    assert pinned.commit == commit and hub.downloads("checkpoint_final.pth") == 3


def test_offline_uses_the_folder_and_checks_a_pinned_commit(hub, tmp_path, monkeypatch):
    write_repository(tmp_path / "repo")
    commit = hub.publish(REPO, str(tmp_path / "repo"))
    fetch_repository(RepositoryReference(REPO))
    asked = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert fetch_repository(RepositoryReference(REPO, commit)).commit == commit
    assert len(hub.requests) == asked  # nothing asked offline
    with pytest.raises(NnsslError, match=f"holds revision {commit}, not {'b' * 40}"):
        fetch_repository(RepositoryReference(REPO, "b" * 40))
    with pytest.raises(NnsslError, match="HF_HUB_OFFLINE is set and .*other_repo holds no adaptation_plan.json"):
        fetch_repository(RepositoryReference("other/repo"))
    assert not (tmp_path / "models" / "other_repo").exists()


def test_files_put_there_by_hand_have_no_known_revision(hub, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    write_repository(tmp_path / "models" / "org_copied")
    fetched = fetch_repository(RepositoryReference("org/copied"))
    assert fetched.commit is None and fetched.pinned == "hf://org/copied"
    assert not (tmp_path / "models" / "org_copied" / ".cache").exists()  # reading writes nothing (may be read-only)
    assert "at revision unknown (no download record" in fetched.describe()
    assert recorded_commit(str(tmp_path / "models" / "org_copied"), "checkpoint_final.pth") is None
    with caplog.at_level(logging.WARNING, logger="nnssl"):
        assert fetch_repository(RepositoryReference("org/copied", "v1")).pinned == "hf://org/copied@v1"
    assert "offline, revision 'v1' cannot be checked" in caplog.text and "no download record" in caplog.text


@pytest.mark.parametrize(("kind", "needle"), [
    ("no_plan", "no adaptation_plan.json: not an nnssl checkpoint repository"),
    ("primus", "'PrimusM' is a Primus (transformer) network, which nnssl does not build; fine-tune it with "
               "nnU-Net master's nnUNetv2_preprocess_like_nnssl and nnUNetv2_train_pretrained"),
    ("missing", "no such model repository"),
])
def test_bad_repositories_fail_before_the_checkpoint_is_downloaded(hub, tmp_path, kind, needle):
    write_repository(tmp_path / "repo", arch_class_name="PrimusM" if kind == "primus" else "PlainConvUNet")
    if kind == "no_plan":
        (tmp_path / "repo" / "adaptation_plan.json").unlink()
    if kind != "missing":
        hub.publish(REPO, str(tmp_path / "repo"))
    with pytest.raises(NnsslError) as info:
        fetch_repository(RepositoryReference(REPO))
    message = str(info.value)
    assert message.startswith(f"https://huggingface.co/{REPO}") and needle in message and "\n" not in message
    assert hub.downloads("checkpoint_final.pth") == 0
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())  # nothing left


def test_a_pinned_commit_is_checked_when_the_hub_cannot_be_reached(hub, tmp_path):
    write_repository(tmp_path / "repo")
    old = hub.publish(REPO, str(tmp_path / "repo"))
    write_repository(tmp_path / "repo", seed=1)
    new = hub.publish(REPO, str(tmp_path / "repo"))
    assert fetch_repository(RepositoryReference(REPO)).commit == new
    hub.close()  # no network, HF_HUB_OFFLINE unset: huggingface_hub falls back to the folder's files
    with pytest.raises(NnsslError, match=f"holds revision {new}, not {old}; download {old} with the Hub reachable"):
        fetch_repository(RepositoryReference(REPO, old))
    assert fetch_repository(RepositoryReference(REPO, new)).commit == new


def test_unset_download_folder_and_no_network(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("nnssl_pretrained_models")
    with pytest.raises(NnsslError, match="nnssl_pretrained_models is not set"):
        fetch_repository(RepositoryReference(REPO))
    monkeypatch.setenv("nnssl_pretrained_models", str(tmp_path / "models"))
    hub.close()  # the Hub is gone: no network
    started = time.monotonic()
    with pytest.raises(NnsslError, match="cannot reach the Hub and .*nnssl-tests_tiny holds no adaptation_plan.json"):
        fetch_repository(RepositoryReference(REPO))
    assert time.monotonic() - started < 60
    assert not (tmp_path / "models" / "nnssl-tests_tiny").exists()


def test_lookup_takes_a_repository_from_the_variable_and_the_plans(hub, tmp_path, monkeypatch):
    write_repository(tmp_path / "repo")
    commit = hub.publish(REPO, str(tmp_path / "repo"))
    monkeypatch.setenv(ENV_VAR, f"https://huggingface.co/{REPO}")
    plans = {"dataset_name": "Dataset900_Tiny", "plans_name": "nnsslPlans"}
    found = find_pretrained_checkpoint(plans, "3d_fullres")
    assert found.repository == f"hf://{REPO}@{commit}" and found.path.endswith("nnssl-tests_tiny/checkpoint_final.pth")
    assert found.source == (f"https://huggingface.co/{REPO} at revision {commit}, named by environment variable "
                            f"{ENV_VAR}")
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    found = find_pretrained_checkpoint({**plans, PLANS_KEY: found.repository}, "3d_fullres")
    assert found.source.endswith(f"at revision {commit}, named by plans key {PLANS_KEY}")
    assert os.path.isfile(found.path)
