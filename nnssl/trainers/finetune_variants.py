"""Fine-tuning recipes: a frozen encoder for the first epochs, the sawtooth schedule (decoder alone, then
the whole network), discriminative rates (random parts fast, transferred parts slow) and layer-wise
learning-rate decay.

``nnUNetv2_train DATASET 3d_fullres 0 -tr nnSSLTrainer_frozenEncoder`` (or ``_sawtooth``,
``_discriminativeLR``, ``_layerwiseLRDecay``). All split nnU-Net's optimizer into parameter groups, each
with an ``lr_scale`` that ``WarmupPolyLRScheduler`` multiplies into the scheduled rate at every step.
Every parameter stays trainable (``requires_grad``) and in the autograd graph, so DDP's gradient
reduction and torch.compile's graphs are the same as ``nnSSLTrainer``'s: a frozen group is a group whose rate is 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from torch import nn

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.plans_and_networks import encoder_key_prefixes, unwrap_network
from nnssl.trainers.lr_schedule import (
    FINE_TUNING_INITIAL_LR,
    LR_SCALE,
    SawtoothLRScheduler,
    WarmupPolyLRScheduler,
    epochs_for_fraction,
    sawtooth_phases,
)
from nnssl.trainers.nnssl_trainer import nnSSLTrainer
from nnssl.trainers.variants import nnSSLTrainer_2epochs_5iters_noMirroring

REST_GROUP = "decoder_and_head"
ENCODER_GROUP = "encoder"
STEM_GROUP = "encoder_stem"
_CUDA = torch.device("cuda")
_STAGE_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def _starts_with(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _named_parameters(network: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Parameters of the plain network (names without DDP / torch.compile prefixes), each once."""
    return unwrap_network(network).named_parameters()


def _encoder_prefixes(network: nn.Module) -> tuple[str, str]:
    prefixes = encoder_key_prefixes(network)
    return prefixes["key_to_encoder"], prefixes["key_to_stem"]


def _group(name: str, params: list[nn.Parameter], lr_scale: float) -> dict:
    return {"params": params, "name": name, LR_SCALE: lr_scale}


def encoder_param_groups(network: nn.Module, encoder_scale: float = 1.0) -> list[dict]:
    """Two groups: decoder and head (``lr_scale`` 1), then encoder and stem (``encoder_scale``), the
    part that ``transfer_scope = "encoder"`` transfers."""
    encoder, stem = _encoder_prefixes(network)
    rest, frozen = [], []
    for name, param in _named_parameters(network):
        (frozen if _starts_with(name, encoder) or _starts_with(name, stem) else rest).append(param)
    return [_group(REST_GROUP, rest, 1.0), _group(ENCODER_GROUP, frozen, encoder_scale)]


def layerwise_param_groups(network: nn.Module, decay: float) -> list[dict]:
    """Groups for layer-wise learning-rate decay over the encoder's ``S`` stages.

    Decoder and head: ``lr_scale`` 1. Encoder stage ``s`` (0 = shallowest, ``S - 1`` = deepest; the
    stage is the first number in the parameter's name after ``key_to_encoder``): ``decay ** (S - s)``.
    Encoder parameters outside a numbered stage (a separate stem, e.g. ResEnc's ``encoder.stem``, or
    a position embedding): ``decay ** (S + 1)``, the smallest. PlainConvUNet's stem is its stage 0.
    """
    encoder, stem = _encoder_prefixes(network)
    stem_is_a_stage = _starts_with(stem, encoder) and _STAGE_INDEX.search(stem[len(encoder) :]) is not None
    rest: list[nn.Parameter] = []
    stages: dict[int, list[nn.Parameter]] = {}
    outside: list[nn.Parameter] = []
    for name, param in _named_parameters(network):
        if _starts_with(name, stem) and not stem_is_a_stage:
            outside.append(param)
        elif _starts_with(name, encoder):
            match = _STAGE_INDEX.search(name[len(encoder) :])
            (stages.setdefault(int(match.group(1)), []) if match else outside).append(param)
        else:
            rest.append(param)
    if not stages:
        raise NnsslError(f"layer-wise learning-rate decay needs numbered encoder stages under '{encoder}'")
    depth = max(stages) + 1
    groups = [_group(REST_GROUP, rest, 1.0)]
    groups += [_group(f"{ENCODER_GROUP}.{s}", stages[s], decay ** (depth - s)) for s in sorted(stages, reverse=True)]
    groups.append(_group(STEM_GROUP, outside, decay ** (depth + 1)))
    return [g for g in groups if g["params"]]


def with_param_groups(
    optimizer: torch.optim.Optimizer, scheduler: WarmupPolyLRScheduler, groups: list[dict]
) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
    """The same optimizer (type and settings) and schedule over ``groups``, which must hold every
    parameter of ``optimizer`` exactly once."""
    before = [p for g in optimizer.param_groups for p in g["params"]]
    after = [p for g in groups for p in g["params"]]
    if len(after) != len(before) or {id(p) for p in after} != {id(p) for p in before}:
        raise NnsslError("parameter groups must hold every parameter of the optimizer exactly once")
    regrouped = type(optimizer)(groups, **optimizer.defaults)
    return regrouped, scheduler.with_optimizer(regrouped)


def encoder_lr_scale(epoch: int, frozen_epochs: int, warmup_epochs: int) -> float:
    """The encoder's rate multiplier at ``epoch``: 0 while frozen, then a linear ramp to 1 over
    ``warmup_epochs`` epochs (``(epoch - frozen_epochs + 1) / (warmup_epochs + 1)``), then 1."""
    if epoch < frozen_epochs:
        return 0.0
    return min(1.0, (epoch - frozen_epochs + 1) / (max(warmup_epochs, 0) + 1))


def frozen_encoder_phases(num_epochs: int, frozen_fraction: float, warmup_fraction: float) -> tuple[int, int]:
    """(frozen epochs, encoder warm-up epochs) of a ``num_epochs`` training, each a fraction of it
    (``epochs_for_fraction``: rounded half up, at least 1 when the fraction is > 0).

    The encoder stays frozen for at most ``num_epochs - 1`` epochs, and its ramp ends before the last
    epoch (at most ``num_epochs - frozen - 1`` epochs), so the last epoch always trains the encoder at the
    full rate. 0.05 and 0.05: 1000 -> (50, 50), 100 -> (5, 5), 40 -> (2, 2), 10 -> (1, 1), 2 -> (1, 0).
    """
    frozen = epochs_for_fraction(frozen_fraction, num_epochs, num_epochs - 1)
    return frozen, epochs_for_fraction(warmup_fraction, num_epochs, num_epochs - frozen - 1)


class nnSSLTrainer_frozenEncoder(nnSSLTrainer):
    """Encoder (+ stem) frozen for ``frozen_encoder_epochs`` epochs: decoder and head train alone.

    Frozen means an ``lr_scale`` of 0 (parameters, momentum and weight decay do not move them: SGD's
    step is ``lr * update``). The scale is recomputed from ``current_epoch`` at every epoch start, so
    ``--c`` resumes in the right phase. At the unfreezing epoch the encoder's momentum buffers
    (gathered while frozen) are dropped and its rate ramps up over ``encoder_warmup_epochs`` epochs.
    Both lengths are fractions of ``num_epochs`` (``frozen_encoder_phases``): 5% each, 50 + 50 of 1000.
    """

    frozen_encoder_fraction: float = 0.05
    encoder_warmup_fraction: float = 0.05

    @property
    def frozen_encoder_epochs(self) -> int:
        """Epochs ``0 .. frozen_encoder_epochs - 1`` keep the encoder frozen (see ``frozen_encoder_phases``)."""
        return self._phases()[0]

    @property
    def encoder_warmup_epochs(self) -> int:
        """Epochs over which the encoder's rate ramps up after unfreezing (see ``frozen_encoder_phases``)."""
        return self._phases()[1]

    def _phases(self) -> tuple[int, int]:
        return frozen_encoder_phases(self.num_epochs, self.frozen_encoder_fraction, self.encoder_warmup_fraction)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
        optimizer, scheduler = super().configure_optimizers()
        self.print_to_log_file(self._phase_description())
        scale = encoder_lr_scale(self.current_epoch, *self._phases())
        return with_param_groups(optimizer, scheduler, encoder_param_groups(self.network, scale))

    def _phase_description(self) -> str:
        frozen, warmup = self._phases()
        return (
            f"{type(self).__name__}: encoder frozen for {frozen} epochs ({self.frozen_encoder_fraction:g} of "
            f"{self.num_epochs}), then its learning rate ramps up over {warmup} epochs "
            f"({self.encoder_warmup_fraction:g}, ending before the last epoch)"
        )

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        frozen, warmup = self._phases()
        scale = encoder_lr_scale(epoch, frozen, warmup)
        unfreezing = epoch == frozen > 0
        for group in self.optimizer.param_groups:
            if group.get("name") != ENCODER_GROUP:
                continue
            group[LR_SCALE] = scale
            if unfreezing:
                for param in group["params"]:
                    self.optimizer.state.pop(param, None)  # momentum gathered while frozen
        if unfreezing:
            self.print_to_log_file(f"{type(self).__name__}: unfreezing the encoder at epoch {epoch}")
        if scale < 1.0:
            self.print_to_log_file(f"{type(self).__name__}: encoder learning rate x{scale:.3g}")
        super().on_train_epoch_start()  # steps the scheduler, which applies the scale


class nnSSLTrainer_layerwiseLRDecay(nnSSLTrainer):
    """Layer-wise learning-rate decay: encoder stage ``s`` of ``S`` learns at ``layer_decay ** (S - s)``
    times the decoder's rate (see ``layerwise_param_groups``)."""

    layer_decay: float = 0.75

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
        optimizer, scheduler = super().configure_optimizers()
        groups = layerwise_param_groups(self.network, self.layer_decay)
        self.print_to_log_file(
            f"{type(self).__name__}: layer-wise learning-rate decay {self.layer_decay}: "
            + ", ".join(f"{g['name']} x{g[LR_SCALE]:.4g}" for g in groups)
        )
        return with_param_groups(optimizer, scheduler, groups)


class nnSSLTrainer_sawtooth(nnSSLTrainer_frozenEncoder):
    """Sawtooth fine-tuning (Wald et al., OpenMind benchmark): two teeth of warm-up and poly decay.

    Tooth 1, the first ``decoder_fraction`` of the epochs: decoder and head train alone (encoder and stem at
    ``lr_scale`` 0: no update at all), warming up over the first half, then decaying to 0. Tooth 2: the whole
    network, warming up again over ``warmup_fraction`` of the epochs, then nnU-Net's poly decay. Both peak
    at ``initial_lr`` (1e-3). Lengths: ``sawtooth_phases`` (1000 epochs: 25 + 25, then 50 + 900).
    The encoder's momentum gathered while frozen is dropped when tooth 2 starts; the decoder keeps its own.
    """

    decoder_fraction: float = 0.05

    def sawtooth_phases(self) -> tuple[int, int, int]:
        """(decoder epochs, decoder warm-up epochs, whole-network warm-up epochs): ``sawtooth_phases``."""
        return sawtooth_phases(self.num_epochs, self.decoder_fraction, self.warmup_fraction)

    def _phases(self) -> tuple[int, int]:
        return self.sawtooth_phases()[0], 0  # the rate itself warms the whole network up again

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> SawtoothLRScheduler:
        return SawtoothLRScheduler(optimizer, self.initial_lr, self.num_epochs, *self.sawtooth_phases())

    def lr_schedule_description(self, lr_scheduler: WarmupPolyLRScheduler) -> str:
        decoder, decoder_warmup, warmup = self.sawtooth_phases()
        return (
            f"{type(self).__name__}: epochs 0-{decoder - 1}: decoder and head alone (decoder_fraction "
            f"{self.decoder_fraction:g} of {self.num_epochs}), warm-up over {decoder_warmup} epochs to "
            f"{self.initial_lr:g}, then decay; from epoch {decoder}: the whole network, warm-up over {warmup} "
            f"epochs (warmup_fraction {self.warmup_fraction:g}) to {self.initial_lr:g}, then poly decay"
        )

    def _phase_description(self) -> str:
        return f"{type(self).__name__}: encoder and stem frozen for epochs 0-{self._phases()[0] - 1}"


class nnSSLTrainer_discriminativeLR(nnSSLTrainer):
    """Discriminative rates: the randomly initialised parts (decoder, head) learn at nnU-Net's from-scratch
    rate (``scratch_lr``, 1e-2), the transferred parts (stem, encoder) at ``encoder_lr`` (1e-3, nnU-Net's
    fine-tuning rate); both warm up over ``warmup_fraction`` of the epochs, then poly decay.

    Unlike ``nnSSLTrainer_layerwiseLRDecay`` (decoder at 1e-3, encoder stages below it), the random
    decoder learns as fast as in a training from scratch, and the encoder has one rate for all its stages.
    """

    encoder_lr: float = FINE_TUNING_INITIAL_LR

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = _CUDA
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.scratch_lr  # the decoder's peak; the encoder's is encoder_lr

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
        optimizer, scheduler = super().configure_optimizers()
        groups = encoder_param_groups(self.network, self.encoder_lr / self.initial_lr)
        self.print_to_log_file(
            f"{type(self).__name__}: peak rates {REST_GROUP} {self.initial_lr:g}, {ENCODER_GROUP} (with stem) "
            f"{self.encoder_lr:g}"
        )
        return with_param_groups(optimizer, scheduler, groups)


class nnSSLTrainer_frozenEncoder_2epochs_5iters_noMirroring(
    nnSSLTrainer_frozenEncoder, nnSSLTrainer_2epochs_5iters_noMirroring
):
    """Short budget for tests: epoch 0 with a frozen encoder, epoch 1 at full rate (the default fractions
    give 1 frozen epoch and no encoder ramp for 2 epochs, see ``frozen_encoder_phases``)."""


class nnSSLTrainer_sawtooth_2epochs_5iters_noMirroring(nnSSLTrainer_sawtooth, nnSSLTrainer_2epochs_5iters_noMirroring):
    """Short budget for tests: epoch 0 trains the decoder alone, epoch 1 the whole network."""


class nnSSLTrainer_discriminativeLR_2epochs_5iters_noMirroring(
    nnSSLTrainer_discriminativeLR, nnSSLTrainer_2epochs_5iters_noMirroring
):
    """Short budget for tests."""


class nnSSLTrainer_layerwiseLRDecay_2epochs_5iters_noMirroring(
    nnSSLTrainer_layerwiseLRDecay, nnSSLTrainer_2epochs_5iters_noMirroring
):
    """Short budget for tests."""
