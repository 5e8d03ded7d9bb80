"""Checkpoints in the nnU-Net SSL ecosystem's format, written by hand (not by nnssl's writer).

Layout as MIC-DKFZ/nnssl's ``AdaptationPlan.serialize()`` writes it (``src/nnssl/adaptation_planning/
adaptation_plan.py``) with a ``pretrain_plan`` shaped like nnssl's ``Plan`` / ``ConfigurationPlan``
(``src/nnssl/experiment_planning/experiment_planners/plan.py``); tiny 3-stage networks (8/16/32 features)
built directly from dynamic_network_architectures. ``openmind_resenc_checkpoint``: the OpenMind ResEnc-L
checkpoints' layout with fewer features per stage.
"""

from __future__ import annotations

import copy
import pydoc

import torch

_COMMON = {
    "n_stages": 3,
    "features_per_stage": [8, 16, 32],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.modules.activation.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
ARCHITECTURES = {
    "ResidualEncoderUNet": {**_COMMON, "n_blocks_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1]},
    "PlainConvUNet": {**_COMMON, "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2]},
}
# the prefixes the ecosystem records for these classes (as dynamic_network_architectures defines them)
KEYS = {
    "ResidualEncoderUNet": ("encoder.stages", "encoder.stem",
                            ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]),
    "PlainConvUNet": ("encoder.stages", "encoder.stages.0",
                      ["encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv"]),
}
REQUIRING_IMPORT = ["conv_op", "norm_op", "nonlin"]  # AdaptationPlan: str/class values (dropout_op is None)


def build_network(arch_class_name: str, input_channels: int = 1, seed: int = 0) -> torch.nn.Module:
    """The tiny network of ``arch_class_name``, seeded."""
    kwargs = copy.deepcopy(ARCHITECTURES[arch_class_name])
    for key in REQUIRING_IMPORT:
        kwargs[key] = pydoc.locate(kwargs[key])
    network_class = pydoc.locate(f"dynamic_network_architectures.architectures.unet.{arch_class_name}")
    torch.manual_seed(seed)
    return network_class(input_channels=input_channels, num_classes=input_channels, deep_supervision=False,
                         **kwargs)


def pretrain_plan(spacing: list[float] | None, patch_size: list[int]) -> dict:
    """A serialized nnssl ``Plan`` with one ``ConfigurationPlan`` (field for field)."""
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset745_Unlabeled",
        "plans_name": "nnsslPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "onemmiso": {
                "data_identifier": "nnsslPlans_onemmiso",
                "preprocessor_name": "DefaultPreprocessor",
                "spacing_style": "onemmiso",
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": False,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_mask": "resample_data_or_seg_to_shape",
                "resampling_fn_mask_kwargs": {**resampling, "order": 1},
                "spacing": spacing,
                "patch_size": patch_size,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
    }


def ecosystem_checkpoint(arch_class_name: str, spacing: list[float] | None = (1.0, 1.0, 1.0),
                         patch_size: list[int] = (16, 32, 32), recommended: list[int] = (16, 32, 32),
                         seed: int = 0) -> dict:
    """``{"network_weights", "nnssl_adaptation_plan", "citations"}`` of a tiny pretrained network."""
    encoder, stem, in_proj = KEYS[arch_class_name]
    network = build_network(arch_class_name, seed=seed)
    return {
        "network_weights": network.state_dict(),
        "nnssl_adaptation_plan": {
            "architecture_plans": {
                "arch_class_name": arch_class_name,
                "arch_kwargs": copy.deepcopy(ARCHITECTURES[arch_class_name]),
                "arch_kwargs_requiring_import": list(REQUIRING_IMPORT),
            },
            "pretrain_plan": pretrain_plan(None if spacing is None else list(spacing), list(patch_size)),
            "pretrain_num_input_channels": 1,
            "recommended_downstream_patchsize": list(recommended),
            "key_to_encoder": encoder,
            "key_to_stem": stem,
            "keys_to_in_proj": list(in_proj),
            "key_to_lpe": None,
        },
        "citations": [],
    }


def save_ecosystem_checkpoint(path: str, arch_class_name: str, **kwargs) -> dict:
    """Writes ``ecosystem_checkpoint(...)`` with plain ``torch.save``; returns it."""
    checkpoint = ecosystem_checkpoint(arch_class_name, **kwargs)
    torch.save(checkpoint, path)
    return checkpoint


# OpenMind's ResEnc-L (MIC-DKFZ/nnssl src/nnssl/architectures/architecture_registry.py, get_res_enc_l): 6 stages
# of 1, 3, 4, 6, 6, 6 residual blocks, 3x3x3 kernels, strides 1-2-2-2-2-2, 32-64-128-256-320-320 features
OPENMIND_BLOCKS = [1, 3, 4, 6, 6, 6]
OPENMIND_FEATURES = (32, 64, 128, 256, 320, 320)
# its adaptation plan (BaseMAETrainer.build_architecture_and_adaptation_plan): prefixes and in-projection
OPENMIND_KEYS = ("encoder.stages", "encoder.stem", ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"))


def serialized(value):
    """A value as nnssl's ``serialize_kwargs`` leaves it: whole floats become ints (in lists and dicts too)."""
    if isinstance(value, dict):
        return {key: serialized(v) for key, v in value.items()}
    if isinstance(value, list):
        return [serialized(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def openmind_resenc_kwargs(features_per_stage) -> dict:
    """``DynamicArchitecturePlans(...).serialize()`` of ResEnc-L with other feature counts (kernel sizes stay
    tuples: ``asdict`` keeps them)."""
    return {
        "n_stages": 6, "features_per_stage": list(features_per_stage), "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [(3, 3, 3)] * 6, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
        "n_blocks_per_stage": list(OPENMIND_BLOCKS), "n_conv_per_stage_decoder": [1] * 5, "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def openmind_resenc_network(features_per_stage, seed: int = 0) -> torch.nn.Module:
    """The real ResidualEncoderUNet of dynamic_network_architectures with these kwargs, seeded."""
    kwargs = openmind_resenc_kwargs(features_per_stage)
    for key in REQUIRING_IMPORT:
        kwargs[key] = pydoc.locate(kwargs[key])
    torch.manual_seed(seed)
    network = pydoc.locate("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet")(
        input_channels=1, num_classes=1, deep_supervision=False, **kwargs)
    with torch.no_grad():  # norm weights start at 1 and 0 everywhere: random values make "copied" visible
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter))
    return network


def openmind_resenc_checkpoint(features_per_stage=(4, 8, 8, 16, 16, 16), spacing=(1.0, 1.0, 1.0),
                               patch_size=(160, 160, 160), recommended=(160, 160, 160), seed: int = 0) -> dict:
    """A checkpoint laid out like the OpenMind ResEnc-L ones: the plain network's state dict (no wrapper prefix;
    ``decoder.encoder.*`` repeats the encoder) and ``AdaptationPlan.serialize()`` with class name
    ``ResidualEncoderUNet`` and its kwargs (the published ``ResEncL`` preset has none: it is this network with
    ``OPENMIND_FEATURES``), the tuples it keeps and the whole floats it turns into ints."""
    encoder, stem, in_proj = OPENMIND_KEYS
    plan = {
        "architecture_plans": {"arch_class_name": "ResidualEncoderUNet",
                               "arch_kwargs": openmind_resenc_kwargs(features_per_stage),
                               "arch_kwargs_requiring_import": list(REQUIRING_IMPORT)},
        "pretrain_plan": pretrain_plan(list(spacing), list(patch_size)),
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": tuple(recommended),
        "key_to_encoder": encoder,
        "key_to_stem": stem,
        "keys_to_in_proj": tuple(in_proj),
        "key_to_lpe": None,
    }
    network = openmind_resenc_network(features_per_stage, seed)
    return {"network_weights": network.state_dict(), "nnssl_adaptation_plan": serialized(plan), "citations": []}
