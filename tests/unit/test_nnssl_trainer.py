"""nnSSLTrainer built by hand on a planned-only dataset: transfer on fresh start only, errors -> SystemExit."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnssl.checkpoints.files import save_atomic
from nnssl.nnunet_adapter.plans_and_networks import build_network
from nnssl.trainers import (
    nnSSLTrainer,
    nnSSLTrainer_2epochs_5iters_noMirroring,
    nnSSLTrainer_10epochs_25iters,
    nnSSLTrainer_100epochs,
    nnSSLTrainer_250epochs,
    nnSSLTrainer_fullTransfer,
    nnSSLTrainer_noWarmup,
    nnUNetTrainer_2epochs_5iters_noMirroring,
    nnUNetTrainer_10epochs_25iters,
)
from nnssl.trainers.lr_schedule import WarmupPolyLRScheduler, warmup_poly_lr
from nnssl.trainers.nnssl_trainer import PRETRAINED_FLAG_MESSAGE, stock_pretrained_flag_given

DATASET = "Dataset900_Tiny"
CPU = torch.device("cpu")
ENCODER_KEY = "encoder.stages.0.0.convs.0.conv.weight"
DECODER_KEY = "decoder.stages.0.convs.0.conv.weight"
DATASET_JSON = {
    "channel_names": {"0": "LSM"},
    "labels": {"background": 0, "structure": 1},
    "numTraining": 1,
    "file_ending": ".nii.gz",
}
ARCH_KWARGS = {
    "n_stages": 3,
    "features_per_stage": [8, 16, 32],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
RESAMPLING = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}


def tiny_plans() -> dict:
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [16, 32, 32],
        "median_image_size_in_voxels": [16.0, 32.0, 32.0],
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": RESAMPLING,
        "resampling_fn_seg_kwargs": {**RESAMPLING, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**RESAMPLING, "order": 1},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": copy.deepcopy(ARCH_KWARGS),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": DATASET,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [16, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.5,
                "median": 0.5,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 0.1,
            }
        },
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    """nnU-Net folders with a planned dataset and one finished pretraining; returns its checkpoint path."""
    preprocessed = tmp_path / "nnUNet_preprocessed"
    data = preprocessed / DATASET / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case_000.b2nd").write_bytes(b"")  # infer_dataset_class only looks at the file endings
    results = tmp_path / "nnUNet_results"
    for name, path in (("nnUNet_preprocessed", preprocessed), ("nnUNet_results", results)):
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    monkeypatch.delenv("nnssl_pretrained_weights", raising=False)
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", "nnSSLTrainer"])
    torch.manual_seed(123)
    network = build_network(tiny_plans(), "3d_fullres", 1, 1)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn_like(p))  # norm weights start at 1/0 everywhere: make "copied" visible
    path = results / DATASET / "nnsslPretrain_mae__nnUNetPlans__3d_fullres" / "checkpoint_final.pth"
    save_atomic({"network_weights": network.state_dict()}, str(path))
    return str(path)


def make_trainer(cls=nnSSLTrainer, continue_training: bool = False) -> nnSSLTrainer:
    plans = tiny_plans()
    plans["continue_training"] = continue_training
    return cls(plans, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), device=CPU)


def weights(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["network_weights"]


def test_fresh_training_loads_encoder_and_logs_report(env):
    trainer = make_trainer()
    trainer.initialize()
    state, pretrained = trainer.network.state_dict(), weights(env)
    assert torch.equal(state[ENCODER_KEY], pretrained[ENCODER_KEY])
    assert not torch.equal(state[DECODER_KEY], pretrained[DECODER_KEY])
    assert trainer.pretrained_checkpoint == env
    log = Path(trainer.log_file).read_text()
    assert "pretrained weights transferred (scope: encoder)" in log and env in log
    assert isinstance(trainer.lr_scheduler, WarmupPolyLRScheduler) and trainer.lr_scheduler.warmup_steps == 50
    assert trainer.initial_lr == trainer.lr_scheduler.initial_lr == 1e-3  # nnU-Net's fine-tuning rate
    assert "warm-up over 50 epochs (warmup_fraction 0.05 of 1000 epochs) to the peak 0.001 at epoch 50" in log
    # the optimizer holds the very parameters that received the weights
    assert trainer.optimizer.param_groups[0]["params"][0] is next(trainer.network.parameters())


def test_full_transfer_and_short_schedule_variants(env):
    trainer = make_trainer(nnSSLTrainer_fullTransfer)
    trainer.initialize()
    assert torch.equal(trainer.network.state_dict()[DECODER_KEY], weights(env)[DECODER_KEY])
    short = make_trainer(nnSSLTrainer_2epochs_5iters_noMirroring)
    short.initialize()
    assert (short.num_epochs, short.num_iterations_per_epoch, short.lr_scheduler.warmup_steps) == (2, 5, 1)
    short.lr_scheduler.step(0)
    assert short.optimizer.param_groups[0]["lr"] == pytest.approx(short.initial_lr / 2)


def test_continue_training_and_load_checkpoint_skip_the_transfer(env, tmp_path, monkeypatch):
    continued = make_trainer(continue_training=True)
    continued.initialize()
    assert continued.pretrained_checkpoint is None
    assert not torch.equal(continued.network.state_dict()[ENCODER_KEY], weights(env)[ENCODER_KEY])

    first = make_trainer()
    first.initialize()
    saved = str(tmp_path / "checkpoint_latest.pth")
    first.save_checkpoint(saved)
    # A transfer attempt would now fail loudly: proves that load_checkpoint (--c / --val) skips it.
    monkeypatch.setenv("nnssl_pretrained_weights", str(tmp_path / "nowhere"))
    second = make_trainer()
    second.load_checkpoint(saved)
    assert second.pretrained_checkpoint is None
    assert torch.equal(second.network.state_dict()[DECODER_KEY], first.network.state_dict()[DECODER_KEY])


def test_continue_without_checkpoint_starts_from_pretrained_weights(env, monkeypatch):
    # nnU-Net's --c with no checkpoint on disk starts a new training; stub the data-loading part.
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    trainer = make_trainer(continue_training=True)
    trainer.initialize()
    trainer.on_train_start()
    assert trainer.pretrained_checkpoint == env
    assert torch.equal(trainer.network.state_dict()[ENCODER_KEY], weights(env)[ENCODER_KEY])


def test_stock_pretrained_weights_flag_stops(env, monkeypatch):
    monkeypatch.setattr(sys, "argv", [*sys.argv, "-pretrained_weights", env])
    with pytest.raises(SystemExit) as err:
        make_trainer().initialize()
    assert str(err.value.code) == PRETRAINED_FLAG_MESSAGE
    assert stock_pretrained_flag_given(["x", "-pretrained_weights=f.pth"])
    assert stock_pretrained_flag_given(["x", "-pre", "f.pth"])
    assert not stock_pretrained_flag_given(["x", "-p", "nnUNetPlans", "--c"])


def test_errors_become_systemexit_with_one_line(env, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "empty_results"))
    with pytest.raises(SystemExit) as err:
        make_trainer().initialize()
    assert "nnssl_pretrain -d" in str(err.value.code) and "\n" not in str(err.value.code)

    wrong = {k: v[:1] if k == ENCODER_KEY else v for k, v in weights(env).items()}
    bad = tmp_path / "bad.pth"
    save_atomic({"network_weights": wrong}, str(bad))
    monkeypatch.setenv("nnssl_pretrained_weights", str(bad))
    with pytest.raises(SystemExit) as err:
        make_trainer().initialize()
    message = str(err.value.code)
    assert message.startswith(str(bad)) and f"{ENCODER_KEY} checkpoint (1,1,3,3,3) vs network (8,1,3,3,3)" in message


def test_one_channel_pretraining_fine_tunes_a_two_channel_dataset(env, tmp_path, monkeypatch):
    """1-channel checkpoint (with its adaptation plan), 2-channel dataset: the in-proj is adapted and logged."""
    pretrained = weights(env)
    checkpoint = tmp_path / "one_channel.pth"
    keys_to_in_proj = ["encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv"]
    save_atomic({"network_weights": pretrained, "nnssl_adaptation_plan": {"keys_to_in_proj": keys_to_in_proj}},
                str(checkpoint))
    monkeypatch.setenv("nnssl_pretrained_weights", str(checkpoint))
    plans = tiny_plans()
    plans["continue_training"] = False
    dataset_json = {**copy.deepcopy(DATASET_JSON), "channel_names": {"0": "LSM", "1": "LSM2"}}
    trainer = nnSSLTrainer(plans, "3d_fullres", 0, dataset_json, device=CPU)
    trainer.initialize()
    state = trainer.network.state_dict()
    w = pretrained[ENCODER_KEY]
    assert w.shape == (8, 1, 3, 3, 3)
    assert torch.equal(state[ENCODER_KEY], torch.cat([w * 0.5, w * 0.5], dim=1))
    assert torch.equal(state["encoder.stages.0.0.convs.1.conv.weight"],
                       pretrained["encoder.stages.0.0.convs.1.conv.weight"])
    log = Path(trainer.log_file).read_text()
    assert f"adapted input projection {ENCODER_KEY}: 1 -> 2 input channels" in log


def lr_sequence(trainer) -> list[float]:
    lrs = []
    for epoch in range(trainer.num_epochs):
        trainer.lr_scheduler.step(epoch)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    return lrs


class UserTrainer40(nnSSLTrainer):
    """A user's variant written the nnU-Net way: num_epochs set in __init__, nothing else."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):  # noqa: B008
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 40


def test_user_subclass_with_40_epochs_warms_up_briefly_and_decays(env):
    trainer = make_trainer(UserTrainer40)
    trainer.initialize()
    lrs = lr_sequence(trainer)
    warmup = trainer.lr_scheduler.warmup_steps
    assert warmup == trainer.warmup_epochs == 2 and warmup <= 4  # 5% of 40, not the former 39
    assert max(lrs) == lrs[warmup] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-3 * 38**-0.9) and lrs[-1] < 0.1 * max(lrs)  # 3.78e-5
    log = Path(trainer.log_file).read_text()
    assert "warm-up over 2 epochs (warmup_fraction 0.05 of 40 epochs)" in log and "at the last epoch 39" in log


@pytest.mark.parametrize("num_epochs", [2, 10, 40, 1000])
def test_configure_optimizers_follows_num_epochs(env, num_epochs):
    trainer = make_trainer()
    trainer.num_epochs = num_epochs  # set before initialize(), as a subclass's __init__ would
    trainer.initialize()
    warmup = {2: 1, 10: 1, 40: 2, 1000: 50}[num_epochs]
    assert trainer.lr_scheduler.warmup_steps == warmup
    expected = [warmup_poly_lr(e, 1e-3, num_epochs, warmup) for e in range(num_epochs)]
    assert lr_sequence(trainer) == pytest.approx(expected)


def test_variants_warm_up_over_five_percent_and_twins_keep_nnunet_rate(env):
    warmups = {
        nnSSLTrainer: 50,
        nnSSLTrainer_noWarmup: 0,
        nnSSLTrainer_100epochs: 5,
        nnSSLTrainer_250epochs: 13,
        nnSSLTrainer_10epochs_25iters: 1,
        nnSSLTrainer_2epochs_5iters_noMirroring: 1,
    }
    for cls, warmup in warmups.items():
        trainer = make_trainer(cls)
        assert (trainer.warmup_epochs, trainer.initial_lr) == (warmup, 1e-3), cls.__name__
    for cls in (nnUNetTrainer_10epochs_25iters, nnUNetTrainer_2epochs_5iters_noMirroring):
        assert make_trainer(cls).initial_lr == 1e-2  # from scratch: nnU-Net's stock rate
