"""The sawtooth and discriminative-rate recipes on the tiny planned dataset of test_nnssl_trainer: frozen
parameters stay bit-identical through real optimizer steps of the decoder-only tooth, the rate at every
phase border follows the hand-computed schedule, and each parameter group gets its own peak rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnssl.trainers import nnSSLTrainer_discriminativeLR, nnSSLTrainer_sawtooth
from nnssl.trainers.lr_schedule import SawtoothLRScheduler, sawtooth_lr, sawtooth_phases
from tests.unit.test_finetune_variants import groups_by_name, moved, random_batch, snapshot, start_epoch
from tests.unit.test_nnssl_trainer import env, make_trainer  # noqa: F401 (env: the pretraining fixture)

pytestmark = pytest.mark.usefixtures("env")
PEAK = 1e-3

# N: (decoder epochs D, decoder warm-up Dw, whole-network warm-up W), defaults 0.05 and 0.05
SAWTOOTH = {2: (1, 0, 0), 10: (1, 0, 1), 40: (2, 1, 2), 1000: (50, 25, 50)}


def expected_rate(epoch: int, num_epochs: int, decoder: int, decoder_warmup: int, warmup: int) -> float:
    """The sawtooth rate written out by hand (the reference trainer's four stages)."""
    if epoch < decoder_warmup:  # decoder, linear warm-up
        return PEAK * (epoch + 1) / (decoder_warmup + 1)
    if epoch < decoder:  # decoder, poly decay to 0 at D
        return PEAK * (1 - (epoch - decoder_warmup) / (decoder - decoder_warmup)) ** 0.9
    if epoch < decoder + warmup:  # whole network, linear warm-up
        return PEAK * (epoch - decoder + 1) / (warmup + 1)
    return PEAK * (1 - (epoch - decoder - warmup) / (num_epochs - decoder - warmup)) ** 0.9


@pytest.mark.parametrize("num_epochs", sorted(SAWTOOTH))
def test_sawtooth_phases_and_rates_at_every_border(num_epochs):
    decoder, decoder_warmup, warmup = SAWTOOTH[num_epochs]
    assert sawtooth_phases(num_epochs, 0.05, 0.05) == (decoder, decoder_warmup, warmup)
    trainer = make_trainer(nnSSLTrainer_sawtooth)
    trainer.num_epochs = num_epochs  # as a subclass's __init__ would
    trainer.initialize()
    assert isinstance(trainer.lr_scheduler, SawtoothLRScheduler)
    borders = {0, decoder_warmup - 1, decoder_warmup, decoder - 1, decoder, decoder + warmup - 1,
               decoder + warmup, num_epochs - 1}
    for epoch in sorted(e for e in borders if 0 <= e < num_epochs):
        start_epoch(trainer, epoch)
        groups = groups_by_name(trainer)
        rate = expected_rate(epoch, num_epochs, decoder, decoder_warmup, warmup)
        assert groups["decoder_and_head"]["lr"] == pytest.approx(rate, rel=1e-9, abs=0), epoch
        assert groups["encoder"]["lr"] == (0.0 if epoch < decoder else pytest.approx(rate, rel=1e-9, abs=0)), epoch
    log = Path(trainer.log_file).read_text()
    assert f"epochs 0-{decoder - 1}: decoder and head alone" in log and f"from epoch {decoder}: the whole" in log


def test_sawtooth_rate_function_for_1000_epochs():
    rates = [sawtooth_lr(e, PEAK, 1000, 50, 25, 50) for e in range(1000)]
    assert rates[24] == pytest.approx(PEAK * 25 / 26) and rates[25] == pytest.approx(PEAK)  # tooth 1 peak
    assert rates[49] == pytest.approx(PEAK * (1 / 25) ** 0.9)  # decays towards 0 at epoch 50
    assert rates[50] == pytest.approx(PEAK / 51) and rates[100] == pytest.approx(PEAK)  # tooth 2
    assert rates[999] == pytest.approx(PEAK * (1 / 900) ** 0.9)
    assert max(rates) == pytest.approx(PEAK)


@pytest.mark.parametrize("num_epochs", [10, 40])
def test_sawtooth_freezes_encoder_and_stem_bit_identically_then_trains_them(num_epochs):
    decoder = SAWTOOTH[num_epochs][0]
    trainer = make_trainer(nnSSLTrainer_sawtooth)
    trainer.num_epochs = num_epochs
    trainer.initialize()
    encoder, rest = snapshot(trainer, "encoder."), snapshot(trainer, "decoder.stages")
    assert any("stem" in k or k.startswith("encoder.stages.0.0.convs.0") for k in encoder)  # the stem is in it
    for epoch in range(decoder):
        start_epoch(trainer, epoch)
        for _ in range(3):
            trainer.train_step(random_batch(trainer))
    after_tooth = snapshot(trainer, "encoder.")
    assert all(torch.equal(after_tooth[k], v) for k, v in encoder.items())  # no update at all, bit for bit
    assert moved(trainer, rest) == set(rest)
    start_epoch(trainer, decoder)
    assert not any(p in trainer.optimizer.state for p in groups_by_name(trainer)["encoder"]["params"])
    trainer.train_step(random_batch(trainer))
    # a conv bias right before an instance norm has no gradient (the norm subtracts it): only the rest must move
    assert moved(trainer, encoder) >= {k for k in encoder if not k.endswith(".conv.bias")}


@pytest.mark.parametrize("num_epochs", [2, 10, 40, 1000])
def test_discriminative_rates_per_group(num_epochs):
    trainer = make_trainer(nnSSLTrainer_discriminativeLR)
    trainer.num_epochs = num_epochs
    trainer.initialize()
    assert trainer.initial_lr == trainer.scratch_lr == 1e-2  # nnU-Net's from-scratch rate, read from nnU-Net
    groups = groups_by_name(trainer)
    named = dict(trainer.network.named_parameters())
    encoder_ids = {id(p) for k, p in named.items() if k.startswith("encoder.")}
    assert {id(p) for p in groups["encoder"]["params"]} == encoder_ids
    assert len(groups["encoder"]["params"]) + len(groups["decoder_and_head"]["params"]) == len(named)
    warmup = trainer.warmup_epochs
    for epoch in sorted({0, warmup - 1, warmup, num_epochs - 1} - {-1}):
        start_epoch(trainer, epoch)
        if epoch < warmup:  # both warm up, linearly from near 0
            fraction = (epoch + 1) / (warmup + 1)
        else:  # poly decay from the peaks
            fraction = (1 - (epoch - warmup) / (num_epochs - warmup)) ** 0.9
        assert groups["decoder_and_head"]["lr"] == pytest.approx(1e-2 * fraction, rel=1e-9, abs=0), epoch
        assert groups["encoder"]["lr"] == pytest.approx(1e-3 * fraction, rel=1e-9, abs=0), epoch
        if epoch == warmup:  # the peaks: nnU-Net's scratch rate for the decoder, the fine-tuning rate for the encoder
            assert (groups["decoder_and_head"]["lr"], groups["encoder"]["lr"]) == pytest.approx((1e-2, 1e-3))
    assert "peak rates decoder_and_head 0.01, encoder (with stem) 0.001" in Path(trainer.log_file).read_text()
