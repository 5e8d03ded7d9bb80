"""Planning (flow 2) or the dataset's plans (flow 1), then nnU-Net's preprocessing into nnssl's own folder."""

from __future__ import annotations

import logging
import os

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnssl import distributed
from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.layout import DATASET_FILE, PLANS_FILE
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter import fingerprint, preprocessor, standalone_planning
from nnssl.nnunet_adapter.plans_and_networks import get_configuration, make_small_configuration, network_total_stride
from nnssl.nnunet_adapter.readers import nnunet_reader
from nnssl.pretraining.data import blockwise_preprocessing as blockwise
from nnssl.pretraining.engine.reporting import LOG_FILE
from nnssl.pretraining.engine.schedule import local_batch_size
from nnssl.pretraining.engine.settings import PretrainData, PretrainRequest
from nnssl.volumes.discovery import UnlabeledCase, channel_count
from nnssl.volumes.lazy import is_large_case
from nnssl.volumes.reading import CaseLoader

logger = logging.getLogger(__name__)


def _check_patch_size(plans: dict, configuration: str, patch_size: list[int] | None) -> None:
    if patch_size is None:
        return
    stride = network_total_stride(get_configuration(plans, configuration).network_arch_init_kwargs["strides"])
    if len(patch_size) != 3 or any(p % s or p < s for p, s in zip(patch_size, stride)):
        raise NnsslError(f"--patch-size {patch_size}: must be 3 values, each a multiple of the network's "
                         f"total stride {stride}")


def _check_network_depth(plans: dict, configuration: str, cases: list[UnlabeledCase]) -> None:
    """nnU-Net plans a single-stage network for tiny images (a few voxels per axis): no encoder to pretrain."""
    cm = get_configuration(plans, configuration)
    stages = len(cm.network_arch_init_kwargs["strides"])
    if stages < 2:
        raise NnsslError(f"{cases[0].image_files[0]}: nnU-Net planned a {stages}-stage network (patch "
                         f"{list(cm.patch_size)}) for these images: too small for a U-Net encoder to pretrain; "
                         "use images of at least 16 voxels per axis")


def _plan_standalone(request: PretrainRequest, cases: list[UnlabeledCase], out: str) -> tuple[dict, dict, str]:
    """Flow 2: fingerprint + nnU-Net planner in the private workspace; returns (plans, dataset_json, data root)."""
    workspace = standalone_planning.PlanningWorkspace(out)
    n_channels = channel_count(cases[0])
    names = request.channel_names or ["LSM"] * n_channels
    if len(names) != n_channels:
        raise NnsslError(f"--channel-names: {len(names)} given but the images have {n_channels} channel(s)")
    case_files = {c.identifier: c.image_files for c in cases}
    dataset_json = workspace.write_dataset_json(case_files, names, cases[0].file_ending)
    by_id = {c.identifier: c for c in cases}
    logger.info("extracting nnU-Net's dataset fingerprint of %d unlabeled cases", len(cases))
    loader = CaseLoader(by_id, nnunet_reader)
    fingerprint.extract_fingerprint(sorted(case_files), loader, n_channels, workspace.fingerprint_file,
                                    lambda case_id, n: blockwise.fingerprint_entry(by_id[case_id], n),
                                    _large_cases(cases, request.blockwise_min_voxels))
    logger.info("planning with nnU-Net's %s", request.planner)
    log_file = os.path.join(out, LOG_FILE)
    plans = standalone_planning.plan_workspace(workspace, request.planner, request.gpu_memory_target, log_file)
    logger.info("nnU-Net's planner output: %s", log_file)
    config = request.configuration
    get_configuration(plans, config, f"plans of {request.planner}")
    if request.features_per_stage:
        resolved = get_configuration(plans, config)
        plans["configurations"][config] = make_small_configuration(
            resolved.configuration,
            tuple(request.features_per_stage),
            tuple(request.settings.patch_size or resolved.patch_size),
            int(request.settings.batch_size or resolved.batch_size),
        )
        write_json_atomic(os.path.join(workspace.preprocessed_dataset, plans["plans_name"] + ".json"), plans, indent=4)
    return plans, dataset_json, workspace.preprocessed_dataset


def plan_and_preprocess(request: PretrainRequest, cases: list[UnlabeledCase], out: str,
                        dataset_folder: str | None) -> PretrainData:
    """Plans (flow 2) or loads the dataset's plans (flow 1), then preprocesses into nnssl's own folder."""
    if dataset_folder is not None:
        if request.features_per_stage:
            raise NnsslError("--features-per-stage: flow 1 pretrains the network of the dataset's plans; add a "
                             "configuration to the plans instead")
        plans = load_json(os.path.join(dataset_folder, request.plans_name + ".json"))
        dataset_json = load_json(os.path.join(dataset_folder, "dataset.json"))
        data_root = dataset_folder
        get_configuration(plans, request.configuration, os.path.join(dataset_folder, request.plans_name + ".json"))
    elif request.continue_run and os.path.isfile(os.path.join(out, PLANS_FILE)):
        # a resumed standalone run keeps the plans it started with
        plans, dataset_json = load_json(os.path.join(out, PLANS_FILE)), load_json(os.path.join(out, DATASET_FILE))
        data_root = standalone_planning.PlanningWorkspace(out).preprocessed_dataset
    else:
        os.makedirs(out, exist_ok=True)
        plans, dataset_json, data_root = _plan_standalone(request, cases, out)
    _check_patch_size(plans, request.configuration, request.settings.patch_size)
    _check_network_depth(plans, request.configuration, cases)
    cm = get_configuration(plans, request.configuration)
    data_folder = os.path.join(data_root, f"nnssl_{cm.data_identifier}")
    target_spacing = [0.0] * 3
    for axis, original_axis in enumerate(plans["transpose_forward"]):
        target_spacing[original_axis] = float(cm.spacing[axis])
    for case in cases:
        case.target_spacing = target_spacing  # the OME-Zarr level closest to the plans' spacing
    large = _large_cases(cases, request.blockwise_min_voxels)
    logger.info("preprocessing %d unlabeled cases (%d block by block) with nnU-Net's %s into %s", len(cases),
                len(large), cm.preprocessor_name, data_folder)
    target = blockwise.BlockwiseTarget(
        list(plans["transpose_forward"]), list(cm.spacing), list(cm.patch_size), list(cm.normalization_schemes),
        list(cm.use_mask_for_norm), plans["foreground_intensity_properties_per_channel"],
    )
    by_id = {c.identifier: c for c in cases}
    writer = blockwise.LargeCaseWriter(by_id, target, request.blockwise_workers)
    identifiers = preprocessor.preprocess_cases(
        {c.identifier: c.image_files for c in cases}, CaseLoader(by_id, nnunet_reader), plans, request.configuration,
        dataset_json, data_folder, request.num_processes, large, writer,
    )
    return PretrainData(plans, request.configuration, dataset_json, data_folder, identifiers)


def _large_cases(cases: list[UnlabeledCase], min_voxels: int) -> frozenset[str]:
    return frozenset(c.identifier for c in cases if is_large_case(c, min_voxels))


def check_batch_split(request: PretrainRequest, data: PretrainData) -> None:
    """Under torchrun: the global batch (-b or the plans') must give every process at least one sample."""
    planned = get_configuration(data.plans, data.configuration).batch_size
    local_batch_size(int(request.settings.batch_size or planned), distributed.world_size(), distributed.rank())
