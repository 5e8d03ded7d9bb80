"""Pretrained weights in and out, through the real CLIs: ``nnssl_export`` makes a model repository of a run;
served by a Hub on 127.0.0.1 (tests/fake_hub.py) it is planned from as ``https://huggingface.co/<org>/<repo>``
and fine-tuned offline (``HF_HUB_OFFLINE=1``) from the downloaded copy; a checkpoint laid out like the
OpenMind ResEnc-L ones goes through flow 2 with every stem and encoder tensor transferred."""

from __future__ import annotations

import json

import pytest
import torch

from nnssl.checkpoints.lookup import PLANS_KEY
from tests.conftest import DATASET_ID, PRETRAIN_SCHEDULE, SHORT_SSL_TRAINER
from tests.ecosystem_checkpoints import OPENMIND_KEYS, openmind_resenc_checkpoint
from tests.fake_hub import FakeHub

pytestmark = pytest.mark.cli
REPO = "nnssl-tests/tiny-mae"
REPOSITORY_FILES = {"README.md", "adaptation_plan.json", "checkpoint_final.pth", "config.json", "progress.png",
                    "reconstruction_preview.png"}


@pytest.fixture(scope="module")
def exported(nnunet, flow2_run, tmp_path_factory):
    """``nnssl_export`` of the standalone pretraining: the repository folder."""
    out = tmp_path_factory.mktemp("export") / "repository"
    result = nnunet.run("nnssl_export", "-i", str(flow2_run), "-o", str(out), "--license", "apache-2.0",
                        "--repo-id", REPO, "--list-cases")
    assert "checkpoint_final.pth" in result.stdout and f"hf upload {REPO}" in result.stdout
    return out


def test_export_is_a_complete_repository_written_from_the_run(exported, flow2_run):
    assert {p.name for p in exported.iterdir()} == REPOSITORY_FILES
    run = torch.load(flow2_run / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    shared = torch.load(exported / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert list(shared) == ["network_weights", "nnssl_adaptation_plan"]  # no optimizer, no training state
    assert shared["network_weights"].keys() == run["network_weights"].keys()
    assert all(torch.equal(shared["network_weights"][k], v) for k, v in run["network_weights"].items())
    plan = json.loads((exported / "adaptation_plan.json").read_text())
    assert plan == json.loads(json.dumps(run["nnssl_adaptation_plan"]))

    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: nnssl\ntags:\n- nnssl\n- nnu-net\n")
    assert "- light-sheet-microscopy\n- mae\n---\n" in card  # the synthetic images' channel is named LSM
    epochs, iterations = (PRETRAIN_SCHEDULE[PRETRAIN_SCHEDULE.index(o) + 1] for o in ("--epochs",
                                                                                      "--iterations-per-epoch"))
    progress = json.loads((flow2_run / "nnssl_run.json").read_text())["progress"]
    for fact in (f"{epochs} epochs x {iterations} iterations = {int(epochs) * int(iterations)} steps",
                 "| images | 4 volumes |", "| shapes | 32 x 64 x 64 voxels (z, y, x) |", "| formats | NIfTI (4) |",
                 "lsm_000, lsm_001, lsm_002, lsm_003", f"| final val / trivial | {progress['val_over_trivial']:.3f}",
                 "| features per stage | 8, 16, 32 |", "| patch | 16 x 32 x 32 voxels",
                 f"--pretrained https://huggingface.co/{REPO}", f"-pc https://huggingface.co/{REPO}",
                 f"huggingface-cli upload {REPO}", "1 process on the CPU", "![Reconstruction of a validation patch"):
        assert fact in card, fact


def test_fine_tune_from_the_repository_offline(nnunet, exported, tmp_path):
    hub = FakeHub()
    commit = hub.publish(REPO, str(exported))
    models = tmp_path / "pretrained_models"
    try:
        result = nnunet.run("nnssl_plan_like_pretrained", "-d", str(DATASET_ID), "--pretrained",
                            f"https://huggingface.co/{REPO}", "-n", "hub", training=False, HF_ENDPOINT=hub.url,
                            nnssl_pretrained_models=str(models))
    finally:
        hub.close()  # from here on there is no Hub: the fine-tuning uses the downloaded copy
    assert f"source:         https://huggingface.co/{REPO} at revision {commit}, named by --pretrained" \
        in result.stdout
    assert hub.downloads("checkpoint_final.pth") == 1
    folder = models / REPO.replace("/", "_")
    assert {"adaptation_plan.json", "checkpoint_final.pth", "config.json"} <= {p.name for p in folder.iterdir()}
    plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnsslPlans_hub.json").read_text())
    assert plans[PLANS_KEY] == f"hf://{REPO}@{commit}"  # pinned: every fine-tuning gets these weights

    nnunet.run("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", "nnsslPlans_hub", "-c", "3d_fullres",
               "-np", "1", training=False)
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-p",
                        "nnsslPlans_hub", "-device", "cpu", HF_HUB_OFFLINE="1", HF_ENDPOINT=hub.url,
                        nnssl_pretrained_models=str(models))
    out = result.stdout
    assert (f"pretrained weights from {folder / 'checkpoint_final.pth'} (https://huggingface.co/{REPO} at revision "
            f"{commit}, named by plans key {PLANS_KEY})") in out, out[-3000:]
    assert "pretrained weights transferred (scope: encoder)" in out and "loaded encoder (encoder.stages)" in out


def _unique_tensors(weights: dict, prefix: str) -> int:
    return len({t.data_ptr() for k, t in weights.items() if k.startswith(prefix + ".")})


def test_openmind_resenc_checkpoint_through_flow2(nnunet, monkeypatch):
    spacing = json.loads((nnunet.dataset_dir("preprocessed") / "nnUNetPlans.json").read_text())[
        "configurations"]["3d_fullres"]["spacing"]  # as the dataset's: no resampling, a fast preprocess
    saved = openmind_resenc_checkpoint(spacing=spacing, patch_size=[32, 64, 64], recommended=[32, 64, 64])
    checkpoint = nnunet.root / "openmind" / "checkpoint_final.pth"
    checkpoint.parent.mkdir()
    torch.save(saved, checkpoint)
    nnunet.run("nnssl_plan_like_pretrained", "-d", str(DATASET_ID), "--pretrained", str(checkpoint), "-n",
               "openmind", training=False)
    nnunet.run("nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", "nnsslPlans_openmind", "-c",
               "3d_fullres", "-np", "1", training=False)
    out = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-p",
                     "nnsslPlans_openmind", "-device", "cpu").stdout
    encoder, stem, _ = OPENMIND_KEYS
    weights = saved["network_weights"]
    assert f"loaded stem ({stem}): {_unique_tensors(weights, stem)} tensors" in out, out[-3000:]
    assert f"loaded encoder ({encoder}): {_unique_tensors(weights, encoder)} tensors" in out, out[-3000:]

    # the same plans and trainer in this process: after the transfer, every stem and encoder tensor is the checkpoint's
    from nnssl.trainers import nnSSLTrainer

    for name, value in nnunet.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("nnssl_pretrained_weights", raising=False)
    plans = json.loads((nnunet.dataset_dir("preprocessed") / "nnsslPlans_openmind.json").read_text())
    dataset_json = json.loads((nnunet.dataset_dir("preprocessed") / "dataset.json").read_text())
    trainer = nnSSLTrainer({**plans, "continue_training": False}, "3d_fullres", 4, dataset_json,
                           device=torch.device("cpu"))
    trainer.initialize()
    state = trainer.network.state_dict()
    transferred = [k for k in weights if k.startswith((stem + ".", encoder + "."))]
    assert len(transferred) > 100 and all(torch.equal(state[k], weights[k]) for k in transferred)
    assert not torch.equal(state["decoder.stages.0.convs.0.conv.weight"],
                           weights["decoder.stages.0.convs.0.conv.weight"])  # the decoder is not transferred
