"""Shape-checked, in-place transfer of pretrained weights into an nnU-Net network (pure torch).

nnU-Net's networks (dynamic_network_architectures) expose the encoder and the stem as key prefixes
(``key_to_encoder``, ``key_to_stem``). Their state dicts hold the same tensor under several keys:
``decoder.encoder.*`` repeats the encoder, and ``convs.N.all_modules.0`` repeats ``convs.N.conv``.
Tensors are therefore grouped by identity/storage and each unique tensor is checked, copied and
reported once.

Weights are copied with ``torch.no_grad()`` + ``copy_`` into the existing tensors, so the
optimizer's parameter references (created before the transfer) stay valid.

Different input-channel counts: the weight of the input projection (the modules named by
``keys_to_in_proj``, shape (out, C_pre, kz, ky, kx)) is the only tensor that may change shape. As in
nnU-Net's ``PretrainedTrainer.load_pretrained_weights``
(``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py``), a checkpoint pretrained with one
input channel is repeated to the C_new channels of the network and divided by C_new, so that a constant
image gives the pretrained activation. Other channel counts (C_pre > 1) are not adapted, like there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule

from nnssl.checkpoints.adaptation_plan import ADAPTATION_PLAN_KEY, WEIGHTS_KEY, prefix_renames, rename_key
from nnssl.checkpoints.files import tensor_identity
from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

SCOPES = ("encoder", "full")
REASON_SEG_HEAD = "segmentation head"
REASON_NOT_IN_NETWORK = "in checkpoint only, not in network"
SEG_LAYER_MARKER = ".seg_layers."
# Prefixes a state dict gets from wrappers when saved without unwrapping (DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_NAMED_MISMATCHES = 3
_MAX_EXAMPLE_KEYS = 2
WEIGHT_SUFFIX = ".weight"


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers.

    Reimplemented here (see ``nnssl.nnunet_adapter.plans_and_networks.unwrap_network``) to keep this module free of
    nnunetv2 imports; duck-typed so DDP-like wrappers work too.
    """
    for _ in range(4):  # DDP(compile(net)) is the deepest nesting nnU-Net produces
        if isinstance(network, torch.nn.parallel.DistributedDataParallel) or (
            type(network).__name__ == "DistributedDataParallel" and hasattr(network, "module")
        ):
            network = network.module
        elif isinstance(network, OptimizedModule):
            network = network._orig_mod
        else:
            break
    return network


@dataclass
class TransferReport:
    """What ``transfer_weights`` did, one entry per unique tensor (aliases listed separately).

    ``loaded``: network keys whose tensors were overwritten; ``adapted``: (key, pretrained channels,
    network channels) of the loaded input projections whose channels were adapted; ``skipped``: (key,
    reason) pairs; ``aliases``: (alias key, key it shares storage with); ``numel``: elements per listed key;
    ``parts``: (part name, network key prefix) pairs, most specific first (stem, then encoder), by which
    ``format`` lists the loaded tensors.
    """

    scope: str
    parts: tuple[tuple[str, str], ...] = ()
    loaded: list[str] = field(default_factory=list)
    adapted: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    numel: dict[str, int] = field(default_factory=dict)

    @property
    def num_loaded_parameters(self) -> int:
        return sum(self.numel.get(k, 0) for k in self.loaded)

    def skipped_by_reason(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for key, reason in self.skipped:
            grouped.setdefault(reason, []).append(key)
        return grouped

    def loaded_by_part(self) -> dict[str, list[str]]:
        """Loaded keys per part (``stem``, ``encoder``, else ``other``), in ``parts`` order."""
        grouped: dict[str, list[str]] = {name: [] for name, _ in self.parts}
        for key in self.loaded:
            part = next((name for name, prefix in self.parts if _prefix_match(key, (prefix,))), "other")
            grouped.setdefault(part, []).append(key)
        return {name: keys for name, keys in grouped.items() if keys}

    def format(self) -> str:
        """A readable multi-line report for the training log."""
        lines = [
            f"pretrained weights transferred (scope: {self.scope}): {len(self.loaded)} unique tensors, "
            f"{self.num_loaded_parameters:,} parameters loaded"
        ]
        prefixes = dict(self.parts)
        for part, keys in self.loaded_by_part().items():
            where = f" ({prefixes[part]})" if part in prefixes else ""
            count = sum(self.numel.get(k, 0) for k in keys)
            lines.append(f"  loaded {part}{where}: {len(keys)} tensors, {count:,} parameters [{_examples(keys)}]")
        for key, pretrained_channels, network_channels in self.adapted:
            lines.append(
                f"  adapted input projection {key}: {pretrained_channels} -> {network_channels} input channels "
                f"(repeated {network_channels}x, divided by {network_channels})"
            )
        for reason, keys in self.skipped_by_reason().items():
            count = sum(self.numel.get(k, 0) for k in keys)
            lines.append(f"  skipped ({reason}): {len(keys)} tensors, {count:,} parameters [{_examples(keys)}]")
        if self.aliases:
            lines.append(
                f"  {len(self.aliases)} alias keys (e.g. decoder.encoder.*) share storage with the tensors "
                f"above and are counted once"
            )
        return "\n".join(lines)


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:_MAX_EXAMPLE_KEYS]) + (", ..." if len(keys) > _MAX_EXAMPLE_KEYS else "")


def _prefix_match(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _in_scope(key: str, scope: str, encoder_prefixes: tuple[str, ...]) -> bool:
    if SEG_LAYER_MARKER in "." + key:
        return False
    return scope == "full" or _prefix_match(key, encoder_prefixes)


def _group_aliases(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Keys grouped by the tensor they hold, in state-dict order."""
    groups: dict[tuple, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(tensor_identity(tensor), []).append(key)
    return list(groups.values())


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


def _strip_wrappers(key: str) -> str:
    """``key`` without wrapper prefixes (``module.``, ``_orig_mod.``)."""
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _normalized_checkpoint(checkpoint_weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys with wrapper prefixes (``module.``, ``_orig_mod.``) removed."""
    return {_strip_wrappers(key): value for key, value in checkpoint_weights.items()}


def _in_proj_weight_keys(names: Sequence[str]) -> frozenset[str]:
    """State-dict keys of the input-projection weights, from module names such as ``keys_to_in_proj``."""
    return frozenset(
        _strip_wrappers(name if name.endswith(WEIGHT_SUFFIX) else name + WEIGHT_SUFFIX) for name in names
    )


def network_prefixes(network: nn.Module) -> tuple[str, str]:
    """(key_to_encoder, key_to_stem) of a dynamic_network_architectures network (defaults otherwise)."""
    plain = unwrap_network(network)
    return str(getattr(plain, "key_to_encoder", "encoder")), str(getattr(plain, "key_to_stem", "encoder.stem"))


def checkpoint_in_proj_keys(checkpoint: Mapping) -> list[str] | None:
    """The ``keys_to_in_proj`` a checkpoint records (adaptation plan, else nnssl metadata); None if none."""
    for section in (ADAPTATION_PLAN_KEY, "nnssl_metadata"):
        info = checkpoint.get(section)
        if isinstance(info, Mapping) and info.get("keys_to_in_proj"):
            return [str(k) for k in info["keys_to_in_proj"]]
    return None


def checkpoint_weights_for(
    network: nn.Module, checkpoint: Mapping
) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """The checkpoint's weights and ``keys_to_in_proj`` under the network's key names.

    The adaptation plan's ``key_to_stem`` / ``key_to_encoder`` prefixes are renamed to the network's where
    they differ (as nnU-Net's ``PretrainedTrainer`` maps them); otherwise the keys stay as they are.
    """
    key_to_encoder, key_to_stem = network_prefixes(network)
    renames = prefix_renames(checkpoint, key_to_encoder, key_to_stem)
    weights = _normalized_checkpoint(checkpoint[WEIGHTS_KEY])
    in_proj = checkpoint_in_proj_keys(checkpoint)
    if not renames:
        return weights, in_proj
    logger.info("checkpoint key prefixes renamed to the network's: %s", renames)
    renamed = {rename_key(key, renames): value for key, value in weights.items()}
    return renamed, None if in_proj is None else [rename_key(_strip_wrappers(k), renames) for k in in_proj]


def adapt_in_proj_weight(weight: torch.Tensor, num_input_channels: int) -> torch.Tensor:
    """Adapts a 1-input-channel projection kernel to ``num_input_channels`` input channels.

    nnU-Net's rule (``PretrainedTrainer.load_pretrained_weights``): repeat along the input-channel axis,
    divide by the new channel count. The sum over channels is the pretrained kernel, so an image whose
    channels all hold the same values gives the pretrained activation.

    Args:
        weight: conv kernel of shape (out, 1, kz, ky, kx) (any number of spatial axes).
        num_input_channels: C_new >= 1, the network's input channels.

    Returns:
        kernel of shape (out, C_new, kz, ky, kx), every input channel equal to ``weight[:, 0] / C_new``.

    Raises:
        NnsslError: when ``weight`` has not exactly one input channel (no published rule for that).
    """
    if weight.dim() < 3 or weight.shape[1] != 1 or num_input_channels < 1:
        raise NnsslError(
            f"cannot adapt an input projection of shape {_shape(weight.shape)} to {num_input_channels} "
            f"input channels; only a 1-channel input projection is adapted"
        )
    repeats = (1, num_input_channels) + (1,) * (weight.dim() - 2)
    return weight.repeat(*repeats) / num_input_channels


def _channel_change(ckpt_shape: tuple[int, ...], net_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(C_pre, C_new) when two conv kernel shapes (out, C, *k) differ only in the input-channel axis."""
    if len(ckpt_shape) != len(net_shape) or len(net_shape) < 3:
        return None
    if ckpt_shape[0] != net_shape[0] or ckpt_shape[2:] != net_shape[2:]:
        return None
    return ckpt_shape[1], net_shape[1]


def _shape_mismatch(
    key: str, ckpt_shape: tuple[int, ...], net_shape: tuple[int, ...], is_in_proj: bool
) -> tuple[str | None, tuple[int, int] | None]:
    """For differing shapes: (mismatch message, None), or (None, (C_pre, C_new)) for an adaptable in-proj."""
    change = _channel_change(ckpt_shape, net_shape) if is_in_proj else None
    if change is not None and change[0] == 1:
        return None, change
    hint = (
        f" (input channels {change[0]} -> {change[1]}: only a 1-channel input projection is adapted)"
        if change is not None
        else ""
    )
    return f"{key} checkpoint {_shape(ckpt_shape)} vs network {_shape(net_shape)}{hint}", None


def _skip_reason(keys: list[str]) -> str:
    if any(SEG_LAYER_MARKER in "." + k for k in keys):
        return REASON_SEG_HEAD
    return f"out of scope: {keys[0].split('.')[0]}"


def _plan_transfer(
    state: Mapping[str, torch.Tensor],
    checkpoint: Mapping[str, torch.Tensor],
    scope: str,
    encoder_prefixes: tuple[str, ...],
    in_proj_keys: frozenset[str] = frozenset(),
) -> tuple[TransferReport, list[tuple[str, str]], list[str]]:
    """Classifies every unique tensor. Returns (report, [(network key, checkpoint key)], mismatches).

    A tensor whose alias keys meet ``in_proj_keys`` may differ from the checkpoint in its input-channel
    axis (C_pre = 1); it is then listed in ``report.adapted``.
    """
    report = TransferReport(scope=scope)
    pairs: list[tuple[str, str]] = []
    mismatches: list[str] = []
    for keys in _group_aliases(state):
        in_scope = [k for k in keys if _in_scope(k, scope, encoder_prefixes)]
        canonical = in_scope[0] if in_scope else keys[0]
        report.numel[canonical] = state[canonical].numel()
        report.aliases.extend((k, canonical) for k in keys if k != canonical)
        if not in_scope:
            report.skipped.append((canonical, _skip_reason(keys)))
            continue
        source = next((k for k in [canonical, *keys] if k in checkpoint), None)
        net_shape = tuple(state[canonical].shape)
        if source is None:
            mismatches.append(f"{canonical} missing in checkpoint, network {_shape(net_shape)}")
            continue
        ckpt_shape = tuple(checkpoint[source].shape)
        if ckpt_shape != net_shape:
            message, change = _shape_mismatch(canonical, ckpt_shape, net_shape, not in_proj_keys.isdisjoint(keys))
            if message is not None:
                mismatches.append(message)
                continue
            report.adapted.append((canonical, *change))
        report.loaded.append(canonical)
        pairs.append((canonical, source))
    for key in checkpoint:
        if key not in state and SEG_LAYER_MARKER not in "." + key:
            report.skipped.append((key, REASON_NOT_IN_NETWORK))
            report.numel[key] = checkpoint[key].numel()
    return report, pairs, mismatches


def _incompatible_error(mismatches: list[str]) -> NnsslError:
    shown = "; ".join(mismatches[:_MAX_NAMED_MISMATCHES])
    more = (
        f"; and {len(mismatches) - _MAX_NAMED_MISMATCHES} more" if len(mismatches) > _MAX_NAMED_MISMATCHES else ""
    )
    return NnsslError(
        f"checkpoint incompatible with the dataset's network: {shown}{more}; fine-tune with the plans "
        f"and configuration the checkpoint was pretrained with (nnssl_plan_like_pretrained), or pretrain "
        f"on this dataset's plans"
    )


def transfer_weights(
    network: nn.Module,
    checkpoint_weights: Mapping[str, torch.Tensor],
    scope: str = "encoder",
    in_proj_keys: Sequence[str] | None = None,
) -> TransferReport:
    """Copies the in-scope tensors of ``checkpoint_weights`` into ``network`` in place.

    Args:
        network: an nnU-Net network, possibly wrapped by DDP and/or torch.compile.
        checkpoint_weights: a state dict (``checkpoint['network_weights']``), e.g. conv weights of
            shape (out_channels, in_channels, kz, ky, kx); CPU tensors are fine for a GPU network.
        scope: ``"encoder"`` (tensors under ``key_to_encoder`` and ``key_to_stem``) or ``"full"``
            (encoder and decoder). Segmentation layers (``.seg_layers.``) are never transferred.
        in_proj_keys: module names (or weight keys) of the input projection, e.g. the checkpoint's
            ``keys_to_in_proj``; default: the network's ``keys_to_in_proj``. Their weight may come as
            (out, 1, kz, ky, kx) for a network of shape (out, C_new, kz, ky, kx): it is then adapted by
            ``adapt_in_proj_weight`` and listed in ``report.adapted``.

    Raises:
        NnsslError: when an in-scope tensor is missing from the checkpoint or has another shape (other
            than an adaptable input projection); nothing is copied in that case.
    """
    if scope not in SCOPES:
        raise NnsslError(f"transfer scope '{scope}' is unknown; use one of {', '.join(SCOPES)}")
    plain = unwrap_network(network)
    encoder_prefixes = network_prefixes(plain)
    if in_proj_keys is None:
        in_proj_keys = tuple(getattr(plain, "keys_to_in_proj", ()))
    state = plain.state_dict(keep_vars=True)
    checkpoint = _normalized_checkpoint(checkpoint_weights)
    report, pairs, mismatches = _plan_transfer(
        state, checkpoint, scope, encoder_prefixes, _in_proj_weight_keys(in_proj_keys)
    )
    if mismatches:
        raise _incompatible_error(mismatches)
    report.parts = (("stem", encoder_prefixes[1]), ("encoder", encoder_prefixes[0]))
    adapted = {key: network_channels for key, _, network_channels in report.adapted}
    with torch.no_grad():
        for network_key, checkpoint_key in pairs:
            value = checkpoint[checkpoint_key]
            if network_key in adapted:
                value = adapt_in_proj_weight(value, adapted[network_key])
            state[network_key].copy_(value)
    logger.debug("transferred %d tensors (scope %s), adapted %d", len(pairs), scope, len(adapted))
    return report
