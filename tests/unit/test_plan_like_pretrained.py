"""nnssl_plan_like_pretrained: plans for a downstream dataset that fit a pretrained network.

One tiny raw dataset (4 cases of 24x48x48, spacing (2,1,1)) and its real nnU-Net fingerprint are built once
per module; each test runs nnU-Net's planner in-process on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnssl.checkpoints.files import save_atomic
from nnssl.checkpoints.layout import FINAL_CHECKPOINT
from nnssl.checkpoints.lookup import PLANS_KEY
from nnssl.cli import plan_like_pretrained as cli
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.plan_like_pretrained import (
    plan_like_pretrained,
    round_patch_size,
)
from nnssl.nnunet_adapter.plans_and_networks import build_network
from tests.ecosystem_checkpoints import ARCHITECTURES, save_ecosystem_checkpoint

PRETRAIN_SPACING = [1.0, 0.5, 0.5]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
TOTAL_STRIDE = [2, 4, 4]
ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [8, 16, 32],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": STRIDES,
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _write_raw_dataset(raw: str, name: str, channels: dict, n_cases: int = 4) -> None:
    folder = os.path.join(raw, name)
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        label = np.zeros((24, 48, 48), dtype=np.uint8)
        label[8:16, 16 + i : 30 + i, 12:28] = 1
        for c in range(len(channels)):
            image = (rng.normal(100, 10, label.shape) + 50 * label).astype(np.float32)
            itk = sitk.GetImageFromArray(image)
            itk.SetSpacing((1.0, 1.0, 2.0))  # numpy axis order (z, y, x) -> spacing (2, 1, 1)
            sitk.WriteImage(itk, os.path.join(folder, "imagesTr", f"case_{i:03d}_{c:04d}.nii.gz"))
        itk = sitk.GetImageFromArray(label)
        itk.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(itk, os.path.join(folder, "labelsTr", f"case_{i:03d}.nii.gz"))
    dataset_json = {"channel_names": channels, "labels": {"background": 0, "blob": 1},
                    "numTraining": n_cases, "file_ending": ".nii.gz"}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)


def _write_checkpoint(path: str, spacing: list = PRETRAIN_SPACING, forward: list = (0, 1, 2),
                      channels: int = 1) -> None:
    plans = {"configurations": {"3d_fullres": {"patch_size": [16, 32, 32], "architecture": ARCHITECTURE}}}
    network = build_network(plans, "3d_fullres", channels, channels)
    metadata = {
        "nnssl_version": "0.1.0", "method": "mae", "plans": plans, "configuration": "3d_fullres",
        "architecture": ARCHITECTURE, "num_input_channels": channels, "patch_size": [16, 32, 32],
        "spacing": list(spacing), "transpose_forward": list(forward),
        "transpose_backward": [list(forward).index(i) for i in range(3)],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "key_to_encoder": "encoder", "key_to_stem": "encoder.stem", "keys_to_in_proj": [],
    }
    save_atomic({"network_weights": network.state_dict(), "nnssl_metadata": metadata}, path)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """nnU-Net folders: Dataset501 (fingerprinted), 502 (2 channels), 503 (no fingerprint), 504 (2D)."""
    base = str(tmp_path_factory.mktemp("plan_like"))
    env = {k: os.path.join(base, k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in env.values():
        os.makedirs(folder)
    _write_raw_dataset(env["nnUNet_raw"], "Dataset501_Toy", {"0": "LSM"})
    _write_raw_dataset(env["nnUNet_raw"], "Dataset503_NoFp", {"0": "LSM"}, n_cases=1)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints

        extract_fingerprints([501], num_processes=1, verbose=False, show_progress_bar=False)
    # 502: two channels; only its dataset.json and a fingerprint file matter for the conflict check
    _write_raw_dataset(env["nnUNet_raw"], "Dataset502_TwoCh", {"0": "a", "1": "b"})
    os.makedirs(os.path.join(env["nnUNet_preprocessed"], "Dataset502_TwoCh"))
    shutil.copy(os.path.join(env["nnUNet_preprocessed"], "Dataset501_Toy", "dataset_fingerprint.json"),
                os.path.join(env["nnUNet_preprocessed"], "Dataset502_TwoCh", "dataset_fingerprint.json"))
    # 504: a 2D dataset (single-slice images), as its fingerprint shows
    os.makedirs(os.path.join(env["nnUNet_raw"], "Dataset504_Flat"))
    shutil.copy(os.path.join(env["nnUNet_raw"], "Dataset501_Toy", "dataset.json"),
                os.path.join(env["nnUNet_raw"], "Dataset504_Flat", "dataset.json"))
    os.makedirs(os.path.join(env["nnUNet_preprocessed"], "Dataset504_Flat"))
    with open(os.path.join(env["nnUNet_preprocessed"], "Dataset504_Flat", "dataset_fingerprint.json"), "w") as f:
        json.dump({"shapes_after_crop": [[1, 48, 48]] * 4, "spacings": [[999.0, 1.0, 1.0]] * 4}, f)
    inside = os.path.join(env["nnUNet_results"], "lsm_mae")
    outside = os.path.join(base, "elsewhere", "lsm_mae")
    for folder in (inside, outside):
        _write_checkpoint(os.path.join(folder, FINAL_CHECKPOINT))
    # a pretraining whose axis order (y, z, x) differs from the one nnU-Net's planner picks, (x, z, y)
    permuted = os.path.join(base, "permuted", FINAL_CHECKPOINT)
    _write_checkpoint(permuted, spacing=[1.0, 1.0, 2.0], forward=[1, 0, 2])
    two_channel = os.path.join(base, "two_channel", FINAL_CHECKPOINT)
    _write_checkpoint(two_channel, channels=2)
    return {**env, "inside": inside, "outside": outside, "permuted": permuted, "two_channel": two_channel}


@pytest.fixture(autouse=True)
def _env(roots, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, roots[key])


def _read_plans(roots: dict, name: str) -> dict:
    with open(os.path.join(roots["nnUNet_preprocessed"], "Dataset501_Toy", name + ".json")) as f:
        return json.load(f)


def test_plans_follow_the_pretraining(roots):
    result = plan_like_pretrained("501", roots["inside"])
    plans = _read_plans(roots, "nnsslPlans")
    assert result.plans_file.endswith(os.path.join("Dataset501_Toy", "nnsslPlans.json"))
    assert plans["plans_name"] == "nnsslPlans" and plans["dataset_name"] == "Dataset501_Toy"
    assert list(plans["configurations"]) == ["3d_fullres"]
    config = plans["configurations"]["3d_fullres"]
    assert config["data_identifier"] == "nnsslPlans_3d_fullres"
    assert config["architecture"] == ARCHITECTURE
    assert config["spacing"] == pytest.approx(PRETRAIN_SPACING)
    assert config["normalization_schemes"] == ["ZScoreNormalization"]
    assert config["use_mask_for_norm"] == [False]
    assert plans["transpose_forward"] == [0, 1, 2] and plans["transpose_backward"] == [0, 1, 2]
    assert all(p % s == 0 and p >= s for p, s in zip(config["patch_size"], TOTAL_STRIDE))
    assert config["batch_size"] >= 1
    assert "0" in plans["foreground_intensity_properties_per_channel"]
    assert plans["image_reader_writer"] == "SimpleITKIO"
    assert plans[PLANS_KEY] == os.path.join("lsm_mae", FINAL_CHECKPOINT)
    # nnU-Net's default plans are left alone
    assert not os.path.exists(os.path.join(roots["nnUNet_preprocessed"], "Dataset501_Toy", "nnUNetPlans.json"))


def test_name_file_argument_spacing_and_overrides(roots):
    checkpoint_file = os.path.join(roots["outside"], FINAL_CHECKPOINT)
    result = plan_like_pretrained("Dataset501_Toy", checkpoint_file, name="run2", keep_dataset_spacing=True,
                                  patch_size=[8, 16, 32], batch_size=3)
    plans = _read_plans(roots, "nnsslPlans_run2")
    config = plans["configurations"]["3d_fullres"]
    assert result.plans_name == plans["plans_name"] == "nnsslPlans_run2"
    assert config["data_identifier"] == "nnsslPlans_run2_3d_fullres"
    assert config["spacing"] == pytest.approx([2.0, 1.0, 1.0])  # the dataset's own
    assert config["patch_size"] == [8, 16, 32] and config["batch_size"] == 3
    assert plans[PLANS_KEY] == os.path.realpath(checkpoint_file)  # absolute outside nnUNet_results


def test_axis_order_follows_the_pretraining(roots):
    plan_like_pretrained("501", roots["permuted"], name="perm")
    plans = _read_plans(roots, "nnsslPlans_perm")
    config = plans["configurations"]["3d_fullres"]
    assert plans["transpose_forward"] == [1, 0, 2] and plans["transpose_backward"] == [1, 0, 2]
    assert config["spacing"] == pytest.approx([1.0, 1.0, 2.0])
    # files of 24x48x48 at (2, 1, 1) are 48x48x24 at the target (1, 1, 2) in file order; (y, z, x) order
    assert config["median_image_size_in_voxels"] == pytest.approx([48, 48, 24])
    assert plans["original_median_spacing_after_transp"] == pytest.approx([1.0, 2.0, 1.0])
    # the planner clips its patch to the median shape: a patch left in the planner's order would break this
    limit = round_patch_size([48, 48, 24], TOTAL_STRIDE)
    assert all(p <= m and p % s == 0 for p, m, s in zip(config["patch_size"], limit, TOTAL_STRIDE))


@pytest.mark.parametrize(
    ("dataset", "kwargs", "needle"),
    [
        ("503", {}, "nnUNetv2_extract_fingerprint -d 503"),
        ("599", {}, "not found"),
        ("504", {}, "is 2D"),
        ("501", {"patch_size": [8, 16, 30]}, "divisible"),
        ("501", {"name": "a__b"}, "single '_'"),
    ],
)
def test_conflicts_are_one_line_errors(roots, dataset, kwargs, needle):
    with pytest.raises(NnsslError) as info:
        plan_like_pretrained(dataset, roots["inside"], **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_multi_channel_pretraining_needs_the_same_channels(roots):
    with pytest.raises(NnsslError) as info:
        plan_like_pretrained("501", roots["two_channel"])
    assert "pretrained with 2; only a 1-channel" in str(info.value) and "\n" not in str(info.value)


def test_a_one_channel_pretraining_plans_a_two_channel_dataset(roots):
    """The stem is adapted at fine-tuning (repeat + rescale), so planning goes ahead."""
    result = plan_like_pretrained("502", roots["inside"], name="twoch")
    assert os.path.isfile(result.plans_file)


def test_an_ecosystem_checkpoint_plans_from_its_adaptation_plan(roots, tmp_path):
    """A checkpoint with only network_weights + nnssl_adaptation_plan (written by hand, not by nnssl)."""
    path = str(tmp_path / "resenc.pth")
    save_ecosystem_checkpoint(path, "ResidualEncoderUNet", spacing=[1.0, 0.5, 0.5], recommended=[16, 32, 32])
    result = plan_like_pretrained("501", path, name="eco")
    plans = _read_plans(roots, "nnsslPlans_eco")
    config = plans["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"].endswith(".unet.ResidualEncoderUNet")
    assert config["architecture"]["arch_kwargs"] == ARCHITECTURES["ResidualEncoderUNet"]
    assert config["spacing"] == pytest.approx([1.0, 0.5, 0.5])
    # the recommended downstream patch size and batch size 2, as nnU-Net's fine-tuning plans them
    assert config["patch_size"] == result.patch_size == [16, 32, 32] and config["batch_size"] == 2
    assert config["normalization_schemes"] == ["ZScoreNormalization"] and config["use_mask_for_norm"] == [False]
    assert plans[PLANS_KEY] == os.path.realpath(path)


def test_an_ecosystem_checkpoint_without_spacing_plans_a_two_channel_dataset(roots, tmp_path):
    path = str(tmp_path / "plain.pth")
    save_ecosystem_checkpoint(path, "PlainConvUNet", spacing=None, recommended=[19, 31, 33])
    plan_like_pretrained("502", path, name="eco2", batch_size=3)
    with open(os.path.join(roots["nnUNet_preprocessed"], "Dataset502_TwoCh", "nnsslPlans_eco2.json")) as f:
        config = json.load(f)["configurations"]["3d_fullres"]
    assert config["spacing"] == pytest.approx([2.0, 1.0, 1.0])  # no pretraining spacing: the dataset's own
    assert config["patch_size"] == [20, 32, 32] and config["batch_size"] == 3  # rounded to the stride 4
    assert config["normalization_schemes"] == ["ZScoreNormalization"] * 2
    assert config["use_mask_for_norm"] == [False, False]


def test_round_patch_size():
    assert round_patch_size([20, 37, 3], [2, 4, 4]) == [20, 36, 4]


def test_cli_success_and_error(roots, capsys):
    cli.main(["-d", "501", "--pretrained", roots["inside"], "-n", "cli"])
    out = capsys.readouterr().out
    assert "nnsslPlans_cli.json" in out and "patch size" in out
    with pytest.raises(SystemExit) as info:
        cli.main(["-d", "501", "--pretrained", roots["two_channel"]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nnssl_plan_like_pretrained: error: ") and "Traceback" not in err


def test_cli_bad_arguments_fail_fast_without_torch(roots, tmp_path):
    # a fresh interpreter proves the argument checks run before torch/nnunetv2 are imported
    code = (
        "import sys\nfrom nnssl.cli.plan_like_pretrained import main\n"
        "try:\n    main(['-d', '501', '--pretrained', sys.argv[1]])\n"
        "finally:\n    print('torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy())
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith(
        f"nnssl_plan_like_pretrained: error: {tmp_path / 'missing'}: no such checkpoint file or folder")
    assert proc.stderr.splitlines()[-1] == "False"
