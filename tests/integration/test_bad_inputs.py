"""Every bad input of nnssl_pretrain, nnssl_predict, nnSSLTrainer, model repositories and nnssl_export: one
clear line, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch

from tests.conftest import DATASET_ID, PREDICT_ARGS, SHORT_SSL_TRAINER, NnunetEnv
from tests.ecosystem_checkpoints import ecosystem_checkpoint
from tests.fake_hub import FakeHub

pytestmark = pytest.mark.cli


def write_nifti(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    sitk.WriteImage(image, str(path))


def good_volume(seed=0):
    return np.random.default_rng(seed).poisson(100, (16, 32, 32)).astype(np.uint16)


def assert_one_line_error(result, expected: str, tool: str = "nnssl_pretrain"):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    if tool:
        assert last.startswith(f"{tool}: error: "), last
    assert expected in last, last


def pretrain(nnunet, folder, *args):
    out = folder.parent / "run"
    result = nnunet.run("nnssl_pretrain", "-i", str(folder), *(args or ("-o", str(out))), "-device", "cpu",
                        "--epochs", "1", "--iterations-per-epoch", "1", check=False, timeout=120)
    assert not out.exists() or args, "a failed run must not leave an output folder"
    return result


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    return path


def test_empty_folder(nnunet, folder):
    (folder / "notes.txt").write_text("no images here")
    assert_one_line_error(pretrain(nnunet, folder), "no supported image found")


def test_2d_image(nnunet, folder):
    write_nifti(folder / "slice_0000.nii.gz", good_volume()[0])
    assert_one_line_error(pretrain(nnunet, folder), "2D image")


def test_differing_channel_counts(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume(0))
    write_nifti(folder / "a_0001.nii.gz", good_volume(1))
    write_nifti(folder / "b_0000.nii.gz", good_volume(2))
    assert_one_line_error(pretrain(nnunet, folder), "differing channel counts")


def test_corrupt_file(nnunet, folder):
    write_nifti(folder / "good_0000.nii.gz", good_volume())
    (folder / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI file")
    result = pretrain(nnunet, folder)
    assert_one_line_error(result, "broken_0000.nii.gz")
    assert "cannot read" in result.stderr


def test_nan_voxels(nnunet, folder):
    volume = good_volume().astype(np.float32)
    volume[3, 4, 5] = np.nan
    write_nifti(folder / "nan_0000.mha", volume)  # ITK's NIfTI reader turns NaN into 0; MetaImage keeps it
    assert_one_line_error(pretrain(nnunet, folder), "NaN or Inf")


def test_only_constant_images(nnunet, folder):
    write_nifti(folder / "flat_0000.nii.gz", np.full((16, 32, 32), 7, np.uint16))
    result = pretrain(nnunet, folder)
    assert "constant image" in result.stderr
    assert_one_line_error(result, "every image is constant")


def test_dataset_not_planned(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    assert_one_line_error(pretrain(nnunet, folder, "-d", "777"), "dataset not planned")


def test_configuration_not_in_plans(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    assert_one_line_error(pretrain(nnunet, folder, "-d", str(DATASET_ID), "-c", "3d_nope"),
                          "configuration '3d_nope' not found")


def test_channel_count_differs_from_dataset(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume(0))
    write_nifti(folder / "a_0001.nii.gz", good_volume(1))
    assert_one_line_error(pretrain(nnunet, folder, "-d", str(DATASET_ID)), "the dataset has 1")


def test_output_folder_holding_another_run(nnunet, flow2_run, unlabeled_folder):
    before = (flow2_run / "checkpoint_final.pth").stat().st_mtime
    result = nnunet.run("nnssl_pretrain", "-i", str(unlabeled_folder), "-o", str(flow2_run), check=False)
    assert_one_line_error(result, "holds another pretraining run")
    assert (flow2_run / "checkpoint_final.pth").stat().st_mtime == before


def test_trainer_rejects_incompatible_checkpoint(nnunet, flow2_run):
    """The standalone run's 3-stage network does not fit the dataset's 3d_fullres network."""
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-device",
                        "cpu", check=False, nnssl_pretrained_weights=str(flow2_run))
    assert_one_line_error(result, "incompatible", tool="")


def test_trainer_refuses_stock_pretrained_weights_too(nnunet, flow1_run):
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_tiny", "2", "-tr", SHORT_SSL_TRAINER, "-device",
                        "cpu", "-pretrained_weights", str(flow1_run / "checkpoint_final.pth"), check=False)
    assert_one_line_error(result, "-pretrained_weights", tool="")


def test_trainer_without_pretrained_checkpoint(nnunet):
    """No nnsslPretrain_* folder for 3d_fullres: stop, never train from scratch silently."""
    result = nnunet.run("nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", SHORT_SSL_TRAINER, "-device",
                        "cpu", check=False)
    assert_one_line_error(result, "nnssl_pretrain", tool="")


@pytest.mark.parametrize(("option", "expected"), [
    (["--preview-every", "0"], "--preview-every must be >= 1"),  # was a ZeroDivisionError after the first epoch
    (["-b", "0"], "-b must be >= 1"),  # trained on empty batches
    (["--lr", "-1"], "--lr must be > 0"),  # was torch's ValueError after preprocessing
    (["--num-workers", "-1"], "--num-workers must be >= 0"),  # hung waiting for batches
    (["--spacing", "0", "1", "1"], "--spacing must be positive"),
    (["--val-iterations", "0"], "--val-iterations must be >= 1"),
])
def test_bad_option_values_fail_before_any_work(nnunet, folder, option, expected):
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    assert_one_line_error(pretrain(nnunet, folder, "-o", str(folder.parent / "run"), *option), expected)
    assert not (folder.parent / "run").exists()


def test_bad_method_setting_fails_before_any_work(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    assert_one_line_error(pretrain(nnunet, folder, "-o", str(folder.parent / "run"), "--mask-ratio", "1.5"),
                          "mask_ratio must be in (0, 1)")
    assert not (folder.parent / "run").exists()


def test_images_too_small_for_a_unet(nnunet, folder):
    """nnU-Net plans a 1-stage network for 2x4x4 images: refused after planning, nothing left behind."""
    for i in range(2):
        write_nifti(folder / f"tiny{i}_0000.nii.gz", good_volume(i)[:2, :4, :4])
    assert_one_line_error(pretrain(nnunet, folder), "1-stage network")


def test_output_folder_that_cannot_be_created(nnunet, folder):
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    blocker = folder.parent / "a_file"
    blocker.write_text("not a folder")
    result = pretrain(nnunet, folder, "-o", str(blocker / "run"))
    assert_one_line_error(result, "cannot create the output folder")


def test_unavailable_device_fails_before_any_work(nnunet, folder):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_nifti(folder / "a_0000.nii.gz", good_volume())
    out = folder.parent / "run_cuda"
    result = nnunet.run("nnssl_pretrain", "-i", str(folder), "-o", str(out), "-device", "cuda", check=False,
                        timeout=120)
    assert_one_line_error(result, "no CUDA device available")
    assert not out.exists()  # refused before planning or preprocessing wrote anything


def predict(nnunet, folder, out, *args):
    result = nnunet.run("nnssl_predict", "-i", str(folder), "-o", str(out), *PREDICT_ARGS, *args, check=False,
                        timeout=300)
    assert not out.exists(), "a failed run must not leave an output folder"
    return result


def test_predict_output_below_a_file(predict_model, folder):
    """Was a 21-line NotADirectoryError traceback (after the model was loaded)."""
    tifffile.imwrite(folder / "a.tif", good_volume())
    blocker = folder.parent / "a_file"
    blocker.write_text("not a folder")
    result = predict(predict_model, folder, blocker / "sub", "--spacing", "1", "1", "1")
    assert_one_line_error(result, "cannot create the output folder", tool="nnssl_predict")


def test_truncated_tiff(predict_model, folder):
    """nnssl_predict read it block by block and died in the middle (a 59-line IndexError traceback, an output
    folder left behind); both tools now refuse it, naming the file, before any work."""
    tifffile.imwrite(folder / "cut.tif", good_volume())
    (folder / "cut.json").write_text('{"spacing": [1, 1, 1]}')
    content = (folder / "cut.tif").read_bytes()
    (folder / "cut.tif").write_bytes(content[: len(content) // 2])
    assert_one_line_error(predict(predict_model, folder, folder.parent / "predicted"), "cut.tif: truncated",
                          tool="nnssl_predict")
    assert_one_line_error(pretrain(predict_model, folder), "cut.tif: truncated")


def test_predict_unknown_dataset_is_reported_before_the_images_are_read(nnunet, folder):
    """A model that does not exist is the cheap check: it comes first, alone on stderr (a warning about the
    image's missing spacing used to come before it)."""
    tifffile.imwrite(folder / "a.tif", good_volume())  # no spacing sidecar: reading it would warn
    out = folder.parent / "predicted"
    result = nnunet.run("nnssl_predict", "-i", str(folder), "-o", str(out), "-d", "998", "-c", "3d_fullres",
                        "-f", "0", "-device", "cpu", check=False, timeout=300)
    assert_one_line_error(result, "-d 998:", tool="nnssl_predict")
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]
    assert not out.exists()


# ---------------------------------------------------------------------------- model repositories and nnssl_export
REPO = "nnssl-tests/bad"


@pytest.fixture
def bare(tmp_path):
    """nnU-Net folders without a dataset: the checks below fail before any dataset is read."""
    return NnunetEnv(tmp_path / "nnunet")


def plan_from(env, pretrained, **extra_env):
    result = env.run("nnssl_plan_like_pretrained", "-d", str(DATASET_ID), "--pretrained", pretrained, "-n", "bad",
                     check=False, training=False, timeout=120, **extra_env)
    assert not list(env.preprocessed.rglob("nnsslPlans_bad.json")), "a failed run must not write plans"
    return result


@pytest.mark.parametrize(("kind", "expected"), [
    ("no_plan", f"https://huggingface.co/{REPO}: no adaptation_plan.json: not an nnssl checkpoint repository"),
    ("primus", "'PrimusM' is a Primus (transformer) network, which nnssl does not build; fine-tune it with "
               "nnU-Net master's nnUNetv2_preprocess_like_nnssl and nnUNetv2_train_pretrained"),
])
def test_repository_that_nnssl_cannot_use(bare, tmp_path, kind, expected):
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "config.json").write_text("{}")
    (repository / "checkpoint_final.pth").write_bytes(b"weights nobody downloads")
    if kind == "primus":
        plan = ecosystem_checkpoint("PlainConvUNet")["nnssl_adaptation_plan"]
        plan["architecture_plans"] = {"arch_class_name": "PrimusM", "arch_kwargs": None,
                                      "arch_kwargs_requiring_import": None}
        (repository / "adaptation_plan.json").write_text(json.dumps(plan))
    hub = FakeHub()
    hub.publish(REPO, str(repository))
    try:
        result = plan_from(bare, f"https://huggingface.co/{REPO}", HF_ENDPOINT=hub.url,
                           nnssl_pretrained_models=str(tmp_path / "models"))
    finally:
        hub.close()
    assert_one_line_error(result, expected, tool="nnssl_plan_like_pretrained")
    assert hub.downloads("checkpoint_final.pth") == 0  # refused on the adaptation plan, before the weights
    assert not (tmp_path / "models" / "nnssl-tests_bad").exists()


def test_repository_offline_with_nothing_downloaded(bare, tmp_path):
    result = plan_from(bare, f"hf://{REPO}", HF_HUB_OFFLINE="1", nnssl_pretrained_models=str(tmp_path / "models"))
    assert_one_line_error(result, "HF_HUB_OFFLINE is set and ", tool="nnssl_plan_like_pretrained")
    assert "nnssl-tests_bad holds no adaptation_plan.json" in result.stderr
    assert not (tmp_path / "models" / "nnssl-tests_bad").exists()


def test_repository_without_a_download_folder(bare):
    result = plan_from(bare, f"https://huggingface.co/{REPO}")
    assert_one_line_error(result, "nnssl_pretrained_models is not set", tool="nnssl_plan_like_pretrained")


def test_primus_checkpoint_file_is_refused_naming_what_to_use(nnunet, tmp_path):
    checkpoint = ecosystem_checkpoint("PlainConvUNet")
    checkpoint["nnssl_adaptation_plan"]["architecture_plans"].update(arch_class_name="PrimusM", arch_kwargs=None)
    torch.save(checkpoint, tmp_path / "primus.pth")
    result = plan_from(nnunet, str(tmp_path / "primus.pth"))
    assert_one_line_error(result, "nnUNetv2_train_pretrained -tr PretrainedTrainer_Primusx",
                          tool="nnssl_plan_like_pretrained")


def export(env, run_folder, out, *options):
    result = env.run("nnssl_export", "-i", str(run_folder), "-o", str(out), *(options or ("--license", "mit")),
                     check=False, training=False, timeout=120)
    return result


@pytest.mark.parametrize(("layout", "expected"), [
    ({"checkpoint_latest.pth": b"x", "nnssl_run.json": b"{}"}, "the run is not finished"),
    ({}, "no checkpoint_final.pth; pass the output folder of a finished nnssl_pretrain run"),
    ({"checkpoint_final.pth": None, "nnssl_run.json": b"{}"}, "was not written by nnssl_pretrain"),
])
def test_export_of_something_else_than_a_finished_run(bare, tmp_path, layout, expected):
    run = tmp_path / "run"
    run.mkdir()
    for name, content in layout.items():
        if content is None:
            torch.save(ecosystem_checkpoint("PlainConvUNet"), run / name)
        else:
            (run / name).write_bytes(content)
    out = tmp_path / "exported"
    assert_one_line_error(export(bare, run, out), expected, tool="nnssl_export")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_refuses_bad_options_and_a_used_output_folder(bare, flow2_run, tmp_path):
    out = tmp_path / "exported"
    assert_one_line_error(export(bare, flow2_run, out, "--license", "Apache 2"), "not a licence identifier",
                          tool="nnssl_export")
    assert_one_line_error(export(bare, flow2_run, out, "--license", "mit", "--repo-id", "lsm-mae"),
                          "--repo-id lsm-mae: write it as <org>/<repo>", tool="nnssl_export")
    assert_one_line_error(export(bare, flow2_run, out, "--license", "mit", "--repo-id", "my-lab/lsm--mae"),
                          "--repo-id my-lab/lsm--mae: write it as <org>/<repo>", tool="nnssl_export")
    for tag in ("#private", "organ: brain"):  # YAML would read a comment, a mapping
        assert_one_line_error(export(bare, flow2_run, out, "--license", "mit", "--tag", tag),
                              f"--tag {tag!r}: write a tag with letters, digits", tool="nnssl_export")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(export(bare, flow2_run, out), "exists and is not empty", tool="nnssl_export")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
