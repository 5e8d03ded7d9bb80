"""Plans, configurations and networks, the way nnU-Net builds them."""

from __future__ import annotations

import copy
from typing import Any

import torch
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from nnssl.errors import NnsslError
from nnssl.nnunet_folders import PREPROCESSED_ENV, nnunet_folder


def preprocessed_root() -> str:
    return nnunet_folder(PREPROCESSED_ENV)


def dataset_name_from_id(dataset: str) -> str:
    """``'501'`` or ``'Dataset501_X'`` -> ``'Dataset501_X'``, with a clear error when nnU-Net knows none."""
    try:
        return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    except RuntimeError as e:
        raise NnsslError(
            f"dataset {dataset}: not found in nnUNet_raw or nnUNet_preprocessed; "
            f"run nnUNetv2_plan_and_preprocess -d {dataset} first"
        ) from e


def get_configuration(plans: dict, configuration: str, plans_source: str = "the plans") -> ConfigurationManager:
    """The resolved configuration (``inherits_from`` applied); 3D only."""
    available = list(plans.get("configurations", {}).keys())
    if configuration not in available:
        raise NnsslError(
            f"{plans_source}: configuration '{configuration}' not found; available: {', '.join(available)}"
        )
    cm = PlansManager(copy.deepcopy(plans)).get_configuration(configuration)
    if len(cm.patch_size) != 3:
        raise NnsslError(
            f"{plans_source}: configuration '{configuration}' is 2D; nnssl pretrains 3D networks, use a 3d_* one"
        )
    return cm


def num_input_channels(dataset_json: dict) -> int:
    names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    return len(names)


def build_network(
    plans: dict,
    configuration: str,
    input_channels: int,
    output_channels: int,
    deep_supervision: bool = False,
) -> nn.Module:
    """The network nnU-Net plans for ``configuration`` (PlainConvUNet, ResidualEncoderUNet, ...)."""
    cm = get_configuration(plans, configuration)
    return get_network_from_plans(
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        cm.network_arch_init_kwargs_req_import,
        input_channels,
        output_channels,
        allow_init=True,
        deep_supervision=deep_supervision,
    )


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def encoder_key_prefixes(network: nn.Module) -> dict[str, Any]:
    """Key prefixes of the encoder, the stem and the input projection (dynamic_network_architectures)."""
    network = unwrap_network(network)
    return {
        "key_to_encoder": getattr(network, "key_to_encoder", "encoder"),
        "key_to_stem": getattr(network, "key_to_stem", "encoder.stem"),
        "keys_to_in_proj": list(getattr(network, "keys_to_in_proj", ())),
    }


def network_total_stride(strides: list) -> list[int]:
    """Product of the per-stage strides, per axis: patch sizes must be multiples of it."""
    total = [1, 1, 1]
    for stride in strides:
        stride = [stride] * 3 if isinstance(stride, int) else stride
        total = [t * s for t, s in zip(total, stride)]
    return total


def make_small_configuration(
    configuration: dict,
    features_per_stage: tuple[int, ...] = (8, 16, 32),
    patch_size: tuple[int, ...] = (16, 32, 32),
    batch_size: int = 2,
) -> dict:
    """A small copy of a resolved 3D configuration dict for CPU runs (demo, tests).

    Keeps the first ``len(features_per_stage)`` stages of the planned network (kernels, strides,
    blocks) and sets the feature counts, patch size and batch size. The patch size must be
    divisible by the product of the kept strides.
    """
    small = copy.deepcopy(configuration)
    small.pop("inherits_from", None)
    n = len(features_per_stage)
    kwargs = small["architecture"]["arch_kwargs"]
    if n > kwargs["n_stages"]:
        raise NnsslError(f"the planned network has {kwargs['n_stages']} stages; cannot keep {n}")
    kwargs["n_stages"] = n
    kwargs["features_per_stage"] = list(features_per_stage)
    for key in ("kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage"):
        if key in kwargs:
            kwargs[key] = list(kwargs[key])[:n]
    if "n_conv_per_stage_decoder" in kwargs:
        kwargs["n_conv_per_stage_decoder"] = list(kwargs["n_conv_per_stage_decoder"])[: n - 1]
    total_stride = network_total_stride(kwargs["strides"])
    if any(p % t for p, t in zip(patch_size, total_stride)):
        raise NnsslError(f"patch size {list(patch_size)} is not divisible by the network's stride {total_stride}")
    small["patch_size"] = list(patch_size)
    small["batch_size"] = batch_size
    return small
