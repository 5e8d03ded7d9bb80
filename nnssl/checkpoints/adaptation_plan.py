"""The ``nnssl_adaptation_plan`` checkpoint entry of the nnU-Net SSL ecosystem: writing and reading it.

Published definition: ``AdaptationPlan.serialize()`` in MIC-DKFZ/nnssl
(``src/nnssl/adaptation_planning/adaptation_plan.py``), read by nnU-Net's fine-tuning from SSL checkpoints
(MIC-DKFZ/nnUNet ``documentation/finetuning_from_nnssl_checkpoints.md``,
``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py``). The weights sit next to it under
``network_weights``. Layout (docs/checkpoints.md describes each field)::

    architecture_plans
        arch_class_name               "ResidualEncoderUNet", "PlainConvUNet" (or a dotted class name), or a
                                      preset without kwargs ("ResEncL", "PrimusM", ...)
        arch_kwargs                   the class's keyword arguments (nnU-Net plans' ``arch_kwargs``) or None
        arch_kwargs_requiring_import  kwargs holding dotted class names (nnU-Net's ``_kw_requires_import``)
    pretrain_plan                     plans; readers take ``configurations[<first>]["spacing"/"patch_size"]``
    pretrain_num_input_channels       int
    recommended_downstream_patchsize  [z, y, x]
    key_to_encoder, key_to_stem       state-dict key prefixes of encoder and stem
    keys_to_in_proj                   module names of the input projection
    key_to_lpe                        learnable positional embedding (transformers), else None

This module needs neither nnunetv2 nor torch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

ADAPTATION_PLAN_KEY = "nnssl_adaptation_plan"
WEIGHTS_KEY = "network_weights"
ADAPTATION_PLAN_FIELDS = (
    "architecture_plans", "pretrain_plan", "pretrain_num_input_channels", "recommended_downstream_patchsize",
    "key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe",
)
ARCHITECTURE_PLAN_FIELDS = ("arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import")
_REQUIRED_FIELDS = ("architecture_plans", "pretrain_plan", "pretrain_num_input_channels", "key_to_encoder",
                    "key_to_stem")
_UNET_MODULE = "dynamic_network_architectures.architectures.unet"
# the dynamic_network_architectures classes the ecosystem names by their short class name
UNET_CLASSES = {name: f"{_UNET_MODULE}.{name}" for name in ("ResidualEncoderUNet", "PlainConvUNet")}
_IMPORT_KWARGS = ("conv_op", "norm_op", "dropout_op", "nonlin")
_DEFAULT_NORMALIZATION = "ZScoreNormalization"
# nnssl's "ResEncL" preset (get_res_enc_l in MIC-DKFZ/nnssl src/nnssl/architectures/architecture_registry.py)
RESENC_L_PRESET = {
    "network_class_name": UNET_CLASSES["ResidualEncoderUNet"],
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
        "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": list(_IMPORT_KWARGS),
}
ARCHITECTURE_PRESETS = {"ResEncL": RESENC_L_PRESET}
# MIC-DKFZ/nnssl's transformer presets (PrimusS/B/M/L): what fine-tunes them instead of nnssl
PRIMUS_PREFIX = "Primus"
PRIMUS_INSTEAD = ("fine-tune it with nnU-Net master's nnUNetv2_preprocess_like_nnssl and nnUNetv2_train_pretrained "
                  "-tr PretrainedTrainer_Primusx (documentation/finetuning_from_nnssl_checkpoints.md)")


# ------------------------------------------------------------------------------------------------ writing
def published_class_name(network_class_name: str) -> str:
    """The ecosystem's name of an nnU-Net network class: the short name for the two UNets, else unchanged."""
    short = network_class_name.rsplit(".", 1)[-1]
    return short if UNET_CLASSES.get(short) == network_class_name else network_class_name


def _resolved_configuration(plans: Mapping, name: str) -> dict:
    """A configuration of nnU-Net plans with ``inherits_from`` resolved (a deep copy)."""
    configuration = copy.deepcopy(dict(plans["configurations"][name]))
    parent = configuration.pop("inherits_from", None)
    if parent is None:
        return configuration
    return {**_resolved_configuration(plans, parent), **configuration}


def pretrain_plan_from_metadata(meta: Mapping[str, Any]) -> dict:
    """nnU-Net plans of the pretraining reduced to the one configuration it used, with the values it used.

    Why one configuration: the ecosystem's readers take the *first* entry of ``configurations`` for the
    pretraining spacing and patch size, and nnU-Net plans list ``2d`` first.
    """
    plans = meta["plans"]
    name = meta["configuration"]
    configuration = _resolved_configuration(plans, name)
    configuration.update(
        spacing=[float(s) for s in meta["spacing"]],
        patch_size=[int(p) for p in meta["patch_size"]],
        normalization_schemes=list(meta["normalization_schemes"]),
        use_mask_for_norm=[bool(b) for b in meta["use_mask_for_norm"]],
    )
    plan = {key: copy.deepcopy(value) for key, value in plans.items() if key != "configurations"}
    plan["configurations"] = {name: configuration}
    return plan


def adaptation_plan_from_metadata(meta: Mapping[str, Any]) -> dict:
    """The ecosystem's ``nnssl_adaptation_plan`` for a checkpoint whose ``nnssl_metadata`` is ``meta``.

    Every field of the published ``AdaptationPlan.serialize()``, nothing else; nnssl's own facts stay in
    ``nnssl_metadata`` next to it.
    """
    architecture = meta["architecture"]
    return {
        "architecture_plans": {
            "arch_class_name": published_class_name(architecture["network_class_name"]),
            "arch_kwargs": copy.deepcopy(architecture["arch_kwargs"]),
            "arch_kwargs_requiring_import": list(architecture["_kw_requires_import"]),
        },
        "pretrain_plan": pretrain_plan_from_metadata(meta),
        "pretrain_num_input_channels": int(meta["num_input_channels"]),
        "recommended_downstream_patchsize": [int(p) for p in meta["patch_size"]],
        "key_to_encoder": meta["key_to_encoder"],
        "key_to_stem": meta["key_to_stem"],
        "keys_to_in_proj": list(meta["keys_to_in_proj"]),
        "key_to_lpe": meta.get("key_to_lpe"),
    }


# ------------------------------------------------------------------------------------------------ reading
def read_adaptation_plan(checkpoint: Mapping, checkpoint_file: str) -> dict:
    """The checkpoint's adaptation plan with its required fields checked; one-line ``NnsslError`` otherwise."""
    plan = checkpoint.get(ADAPTATION_PLAN_KEY)
    if not isinstance(plan, Mapping):
        raise NnsslError(
            f"{checkpoint_file}: has neither 'nnssl_metadata' nor '{ADAPTATION_PLAN_KEY}'; pass the output of "
            f"nnssl_pretrain or a checkpoint in the nnU-Net SSL format (see docs/checkpoints.md)"
        )
    missing = [key for key in _REQUIRED_FIELDS if plan.get(key) is None]
    if missing:
        raise NnsslError(
            f"{checkpoint_file}: {ADAPTATION_PLAN_KEY} lacks {', '.join(missing)}; add them as nnssl's "
            f"AdaptationPlan.serialize() writes them (see docs/checkpoints.md)"
        )
    return dict(plan)


def architecture_from_adaptation_plan(plan: Mapping, checkpoint_file: str) -> dict:
    """nnU-Net's ``architecture`` entry (``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``)."""
    architecture = plan["architecture_plans"]
    name = architecture.get("arch_class_name") if isinstance(architecture, Mapping) else None
    if not name:
        raise NnsslError(
            f"{checkpoint_file}: {ADAPTATION_PLAN_KEY}.architecture_plans lacks arch_class_name; add the "
            f"network class (e.g. ResidualEncoderUNet) and its arch_kwargs"
        )
    kwargs = architecture.get("arch_kwargs")
    if not kwargs:
        if name in ARCHITECTURE_PRESETS:
            return copy.deepcopy(ARCHITECTURE_PRESETS[name])
        if name.startswith(PRIMUS_PREFIX):
            raise NnsslError(f"{checkpoint_file}: '{name}' is a Primus (transformer) network, which nnssl does not "
                             f"build; {PRIMUS_INSTEAD}")
        raise NnsslError(
            f"{checkpoint_file}: architecture '{name}' comes without arch_kwargs; nnssl fine-tunes "
            f"PlainConvUNet/ResidualEncoderUNet given with arch_kwargs, or the ResEncL preset "
            f"(fine-tune other presets with nnU-Net's nnUNetv2_train_pretrained)"
        )
    if "." not in name and name not in UNET_CLASSES:
        raise NnsslError(
            f"{checkpoint_file}: architecture '{name}' is unknown; name one of {', '.join(UNET_CLASSES)} "
            f"or a dotted class name in architecture_plans.arch_class_name"
        )
    requiring_import = architecture.get("arch_kwargs_requiring_import")
    if requiring_import is None:
        requiring_import = [key for key in _IMPORT_KWARGS if isinstance(kwargs.get(key), str)]
    return {
        "network_class_name": UNET_CLASSES.get(name, name),
        "arch_kwargs": copy.deepcopy(dict(kwargs)),
        "_kw_requires_import": list(requiring_import),
    }


def pretrain_configuration(plan: Mapping, checkpoint_file: str) -> dict:
    """The pretraining's configuration: the first entry of ``pretrain_plan.configurations``, as readers take it."""
    pretrain_plan = plan["pretrain_plan"]
    configurations = pretrain_plan.get("configurations") if isinstance(pretrain_plan, Mapping) else None
    if not isinstance(configurations, Mapping) or not configurations:
        raise NnsslError(
            f"{checkpoint_file}: {ADAPTATION_PLAN_KEY}.pretrain_plan has no configurations; add the "
            f"pretraining configuration with its spacing and patch_size"
        )
    configuration = next(iter(configurations.values()))
    if not isinstance(configuration, Mapping):
        raise NnsslError(
            f"{checkpoint_file}: {ADAPTATION_PLAN_KEY}.pretrain_plan.configurations holds no dict; write each "
            f"configuration as a dict with spacing and patch_size"
        )
    return dict(configuration)


def _per_axis(values: Sequence | None, cast: type, field: str, checkpoint_file: str) -> list | None:
    if values is None:
        return None
    if not isinstance(values, Sequence) or len(values) != 3:
        raise NnsslError(
            f"{checkpoint_file}: {field} {values} is not 3 values; nnssl fine-tunes 3D networks only"
        )
    return [cast(v) for v in values]


def _normalization(configuration: Mapping, channels: int) -> tuple[list[str], list[bool]]:
    """Normalization schemes and masks; ZScore per channel when absent, as nnU-Net's fine-tuning sets it."""
    schemes = list(configuration.get("normalization_schemes") or [_DEFAULT_NORMALIZATION] * channels)
    masks = configuration.get("use_mask_for_norm")
    if isinstance(masks, Sequence) and not isinstance(masks, str) and len(masks) == len(schemes):
        return schemes, [bool(m) for m in masks]
    return schemes, [bool(masks)] * len(schemes)


def _transposes(pretrain_plan: Mapping, checkpoint_file: str) -> tuple[list[int], list[int]]:
    forward = _per_axis(pretrain_plan.get("transpose_forward"), int, "transpose_forward", checkpoint_file)
    if forward is None:
        logger.info("%s: pretrain_plan has no transpose_forward; taking the axis order (0, 1, 2)", checkpoint_file)
        forward = [0, 1, 2]
    if sorted(forward) != [0, 1, 2]:
        raise NnsslError(f"{checkpoint_file}: transpose_forward {forward} is no permutation of (0, 1, 2)")
    backward = _per_axis(pretrain_plan.get("transpose_backward"), int, "transpose_backward", checkpoint_file)
    return forward, backward if backward is not None else [forward.index(i) for i in range(3)]


def facts_from_adaptation_plan(plan: Mapping, checkpoint_file: str) -> dict[str, Any]:
    """What fine-tuning plans keep from a pretraining, from an adaptation plan alone.

    Returns a dict with ``architecture`` (nnU-Net layout), ``num_input_channels``, ``spacing`` (None: the
    pretraining did not resample), ``transpose_forward``, ``transpose_backward``, ``normalization_schemes``,
    ``use_mask_for_norm`` and ``recommended_patch_size`` (None when absent).
    """
    configuration = pretrain_configuration(plan, checkpoint_file)
    channels = int(plan["pretrain_num_input_channels"])
    forward, backward = _transposes(plan["pretrain_plan"], checkpoint_file)
    schemes, masks = _normalization(configuration, channels)
    return {
        "architecture": architecture_from_adaptation_plan(plan, checkpoint_file),
        "num_input_channels": channels,
        "spacing": _per_axis(configuration.get("spacing"), float, "spacing", checkpoint_file),
        "transpose_forward": forward,
        "transpose_backward": backward,
        "normalization_schemes": schemes,
        "use_mask_for_norm": masks,
        "recommended_patch_size": _per_axis(plan.get("recommended_downstream_patchsize"), int,
                                            "recommended_downstream_patchsize", checkpoint_file),
    }


# ---------------------------------------------------------------------------------------- key prefixes
def prefix_renames(checkpoint: Mapping, key_to_encoder: str, key_to_stem: str) -> list[tuple[str, str]]:
    """(checkpoint prefix, network prefix) pairs where the adaptation plan's stem/encoder prefixes differ
    from the network's; longest checkpoint prefix first. Empty for nnssl's and most ecosystem checkpoints."""
    plan = checkpoint.get(ADAPTATION_PLAN_KEY)
    if not isinstance(plan, Mapping):
        return []
    pairs = [(plan.get("key_to_stem"), key_to_stem), (plan.get("key_to_encoder"), key_to_encoder)]
    renames = [(str(theirs), ours) for theirs, ours in pairs if theirs and str(theirs) != ours]
    return sorted(renames, key=lambda pair: len(pair[0]), reverse=True)


def rename_key(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """``key`` with the first matching checkpoint prefix replaced by the network's."""
    for theirs, ours in renames:
        if key == theirs or key.startswith(theirs + "."):
            return ours + key[len(theirs):]
    return key
