"""Fine-tuning variants on the tiny planned dataset of test_nnssl_trainer: a frozen encoder does not move
while the decoder trains and moves once unfrozen; layer-wise decay gives each encoder stage its rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

from nnssl.errors import NnsslError
from nnssl.trainers import (
    nnSSLTrainer_frozenEncoder,
    nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring,
    nnSSLTrainer_layerwiseLRDecay,
)
from nnssl.trainers.finetune_variants import (
    encoder_lr_scale,
    encoder_param_groups,
    frozen_encoder_phases,
    layerwise_param_groups,
    with_param_groups,
)
from nnssl.trainers.lr_schedule import WarmupPolyLRScheduler, warmup_poly_lr
from tests.unit.test_nnssl_trainer import env, make_trainer  # noqa: F401 (env: the pretraining fixture)

pytestmark = pytest.mark.usefixtures("env")
SHORT_FROZEN = nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring


def snapshot(trainer, prefix: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.network.named_parameters() if k.startswith(prefix)}


def moved(trainer, before: dict[str, torch.Tensor]) -> set[str]:
    now = dict(trainer.network.named_parameters())
    return {k for k, v in before.items() if not torch.equal(now[k], v)}


def random_batch(trainer) -> dict:
    """A batch of the planned patch size with one target per deep-supervision output."""
    data = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        outputs = trainer.network(data)
    targets = [torch.randint(0, 2, (2, 1, *o.shape[2:])).float() for o in outputs]
    return {"data": data, "target": targets}


def start_epoch(trainer, epoch: int) -> None:
    trainer.current_epoch = epoch
    trainer.on_train_epoch_start()


def groups_by_name(trainer) -> dict[str, dict]:
    return {g["name"]: g for g in trainer.optimizer.param_groups}


def test_encoder_lr_scale():
    assert [encoder_lr_scale(e, 50, 50) for e in (0, 49)] == [0.0, 0.0]
    assert [encoder_lr_scale(e, 50, 50) for e in (50, 99, 100, 500)] == pytest.approx([1 / 51, 50 / 51, 1, 1])
    assert [encoder_lr_scale(e, 1, 0) for e in (0, 1, 2)] == [0.0, 1.0, 1.0]


def test_frozen_encoder_trains_decoder_only_then_unfreezes():
    trainer = make_trainer(SHORT_FROZEN)
    trainer.initialize()
    groups = groups_by_name(trainer)
    encoder_ids = {id(p) for k, p in trainer.network.named_parameters() if k.startswith("encoder.")}
    assert list(groups) == ["decoder_and_head", "encoder"] and encoder_ids
    assert {id(p) for p in groups["encoder"]["params"]} == encoder_ids
    assert groups["encoder"]["momentum"] == 0.99 and groups["encoder"]["weight_decay"] > 0

    start_epoch(trainer, 0)
    assert groups["encoder"]["lr"] == 0.0 and groups["decoder_and_head"]["lr"] == pytest.approx(trainer.initial_lr / 2)
    encoder, decoder = snapshot(trainer, "encoder."), snapshot(trainer, "decoder.stages")
    for _ in range(2):
        trainer.train_step(random_batch(trainer))
    assert not moved(trainer, encoder)  # neither gradient, momentum nor weight decay moved it
    assert moved(trainer, decoder) == set(decoder)
    assert any(p in trainer.optimizer.state for p in groups["encoder"]["params"])  # momentum gathered

    start_epoch(trainer, 1)
    assert groups["encoder"]["lr"] == groups["decoder_and_head"]["lr"] == pytest.approx(trainer.initial_lr)
    assert not any(p in trainer.optimizer.state for p in groups["encoder"]["params"])  # reset on unfreezing
    trainer.train_step(random_batch(trainer))
    assert moved(trainer, encoder) == set(encoder)
    log = Path(trainer.log_file).read_text()
    assert "encoder frozen for 1 epochs" in log and "unfreezing the encoder at epoch 1" in log


# N: (frozen epochs, encoder warm-up epochs) with the default fractions (5% and 5%)
FROZEN_PHASES = {2: (1, 0), 3: (1, 1), 10: (1, 1), 40: (2, 2), 100: (5, 5), 1000: (50, 50)}


@pytest.mark.parametrize("num_epochs", sorted(FROZEN_PHASES))
def test_frozen_phases_follow_num_epochs(num_epochs):
    frozen, warmup = FROZEN_PHASES[num_epochs]
    assert frozen_encoder_phases(num_epochs, 0.05, 0.05) == (frozen, warmup)
    trainer = make_trainer(nnSSLTrainer_frozenEncoder)
    trainer.num_epochs = num_epochs  # as a subclass's __init__ would
    trainer.initialize()
    assert (trainer.frozen_encoder_epochs, trainer.encoder_warmup_epochs) == (frozen, warmup)
    assert f"encoder frozen for {frozen} epochs (0.05 of {num_epochs})" in Path(trainer.log_file).read_text()
    epochs = sorted({0, frozen - 1, frozen, frozen + warmup - 1, frozen + warmup, num_epochs - 1} - {-1})
    scales = {}
    for epoch in epochs:
        start_epoch(trainer, epoch)
        groups = groups_by_name(trainer)
        scales[epoch] = groups["encoder"]["lr"] / groups["decoder_and_head"]["lr"]
        assert scales[epoch] == pytest.approx(encoder_lr_scale(epoch, frozen, warmup))
    assert all(scales[e] == 0.0 for e in epochs if e < frozen)  # frozen first ...
    assert scales[frozen] > 0.0 and frozen < num_epochs  # ... but never for the whole training
    ramp = [scales[e] for e in epochs if frozen <= e < frozen + warmup]
    assert ramp == sorted(ramp) and all(s < 1.0 for s in ramp)
    assert scales[num_epochs - 1] == pytest.approx(1.0)  # the last epoch trains the encoder at full rate


def test_frozen_phase_follows_the_epoch_after_continue(tmp_path):
    first = make_trainer(nnSSLTrainer_frozenEncoder)
    first.initialize()
    first.current_epoch = 59  # saved as "continue at epoch 60": 10 epochs after unfreezing
    saved = str(tmp_path / "checkpoint_latest.pth")
    first.save_checkpoint(saved)

    second = make_trainer(nnSSLTrainer_frozenEncoder, continue_training=True)
    second.load_checkpoint(saved)
    assert second.current_epoch == 60
    start_epoch(second, second.current_epoch)
    groups = groups_by_name(second)
    assert groups["encoder"]["lr"] == pytest.approx(groups["decoder_and_head"]["lr"] * 11 / 51)
    start_epoch(second, 10)
    assert groups["encoder"]["lr"] == 0.0


def test_layerwise_decay_groups_and_schedule():
    trainer = make_trainer(nnSSLTrainer_layerwiseLRDecay)
    trainer.initialize()
    # 3 stages (S = 3), decay 0.75: stage s gets 0.75 ** (3 - s); PlainConvUNet's stem is its stage 0.
    expected = {"decoder_and_head": 1.0, "encoder.2": 0.75, "encoder.1": 0.5625, "encoder.0": 0.421875}
    groups = groups_by_name(trainer)
    assert {name: g["lr_scale"] for name, g in groups.items()} == pytest.approx(expected)
    named = dict(trainer.network.named_parameters())
    for stage in range(3):
        in_stage = {id(p) for k, p in named.items() if k.startswith(f"encoder.stages.{stage}.")}
        assert {id(p) for p in groups[f"encoder.{stage}"]["params"]} == in_stage
    assert sum(len(g["params"]) for g in groups.values()) == len(named)
    scheduler = trainer.lr_scheduler
    for epoch in (0, 10, 50, 700):
        scheduler.step(epoch)
        lr = warmup_poly_lr(epoch, trainer.initial_lr, trainer.num_epochs, 50)
        assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([lr * s for s in expected.values()])
    assert "encoder.0 x0.4219" in Path(trainer.log_file).read_text()

    saved = trainer.log_file.replace(".txt", ".pth")
    trainer.save_checkpoint(saved)
    resumed = make_trainer(nnSSLTrainer_layerwiseLRDecay, continue_training=True)
    resumed.load_checkpoint(saved)  # the same groups: the optimizer state loads
    assert [g["lr_scale"] for g in resumed.optimizer.param_groups] == pytest.approx(list(expected.values()))


def residual_unet() -> torch.nn.Module:
    return ResidualEncoderUNet(
        input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=torch.nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1], num_classes=2, n_conv_per_stage_decoder=[1, 1],
        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=torch.nn.LeakyReLU,
    )


def test_layerwise_groups_of_a_network_with_a_stem_through_torch_compile():
    network = residual_unet()
    groups = {g["name"]: g for g in layerwise_param_groups(torch.compile(network), 0.5)}
    assert {n: g["lr_scale"] for n, g in groups.items()} == {
        "decoder_and_head": 1.0, "encoder.2": 0.5, "encoder.1": 0.25, "encoder.0": 0.125, "encoder_stem": 0.0625
    }
    stem = {id(p) for k, p in network.named_parameters() if k.startswith("encoder.stem.")}
    assert stem and {id(p) for p in groups["encoder_stem"]["params"]} == stem
    frozen = {id(p) for p in encoder_param_groups(network)[1]["params"]}
    assert stem < frozen  # the frozen-encoder variant holds the stem too


def test_with_param_groups_keeps_the_optimizer_and_checks_coverage():
    network = residual_unet()
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    scheduler = WarmupPolyLRScheduler(optimizer, 1e-2, 100, 10)
    groups = encoder_param_groups(network, 0.0)
    regrouped, rescheduled = with_param_groups(optimizer, scheduler, groups)
    assert type(regrouped) is torch.optim.SGD and regrouped.defaults == optimizer.defaults
    assert (rescheduled.max_steps, rescheduled.warmup_steps) == (100, 10)
    assert [g["lr"] for g in regrouped.param_groups] == pytest.approx([1e-2 / 11, 0.0])
    with pytest.raises(NnsslError, match="exactly once"):
        with_param_groups(optimizer, scheduler, groups[:1])
