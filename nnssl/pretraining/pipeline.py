"""``nnssl_pretrain`` end to end: find and check images, plan (flow 2) or take the dataset's plans
(flow 1), preprocess with nnU-Net, pretrain.

Cheap checks (file names, headers, channel counts, output folder) run before torch or nnU-Net is
imported; voxel checks before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from nnssl.checkpoints.layout import FINAL_CHECKPOINT, flow1_run_folder, results_root
from nnssl.errors import NnsslError
from nnssl.pretraining import distributed, run_folder
from nnssl.pretraining.image_discovery import UnlabeledCase, discover_cases
from nnssl.pretraining.image_reading import CaseLoader, ConstantImageError, check_case_header, check_case_sample
from nnssl.pretraining.lazy_volumes import DEFAULT_BLOCKWISE_MIN_VOXELS, is_large_case

if TYPE_CHECKING:  # torch and nnU-Net load after the cheap checks
    from nnssl.pretraining.trainer import PretrainData

logger = logging.getLogger(__name__)


@dataclass
class PretrainRequest:
    """What the user asked for (command-line options of ``nnssl_pretrain``)."""

    inputs: list[str]
    dataset: str | None = None  # flow 1
    output_folder: str | None = None  # flow 2
    plans_name: str = "nnUNetPlans"
    configuration: str = "3d_fullres"
    planner: str = "ExperimentPlanner"
    gpu_memory_target: float | None = None
    features_per_stage: list[int] | None = None
    channel_names: list[str] | None = None
    spacing: list[float] | None = None
    device: str = "cuda"
    compile: bool = False
    num_workers: int | None = None
    num_processes: int = 1
    continue_run: bool = False
    progress_bar: bool = True
    blockwise_min_voxels: int = DEFAULT_BLOCKWISE_MIN_VOXELS
    blockwise_workers: int | None = None  # None: blockwise_preprocessing.default_workers()
    settings: dict = field(default_factory=dict)  # PretrainSettings fields


def _check_cases(cases: list[UnlabeledCase],
                 blockwise_min_voxels: int = DEFAULT_BLOCKWISE_MIN_VOXELS) -> list[UnlabeledCase]:
    """Headers first (cheap), then voxels (of a sample of planes for volumes preprocessed block by block);
    constant images are skipped with a warning."""
    for case in cases:
        check_case_header(case)
    usable = []
    loader = CaseLoader({c.identifier: c for c in cases})
    for case in cases:
        try:
            if is_large_case(case, blockwise_min_voxels):
                check_case_sample(case)
            else:
                loader(case.identifier)
            usable.append(case)
        except ConstantImageError as e:
            logger.warning("%s", e)
    if not usable:
        raise NnsslError(f"{cases[0].image_files[0]}: every image is constant; nothing to pretrain on")
    return usable


def _flow1_locations(request: PretrainRequest) -> tuple[str, str]:
    """(preprocessed dataset folder, run folder) of flow 1."""
    if not os.environ.get("nnUNet_preprocessed"):
        raise NnsslError("nnUNet_preprocessed is not set; export it as for nnU-Net (nnU-Net's setting_up_paths)")
    results = results_root()
    dataset_folder = run_folder.find_dataset_folder(os.environ["nnUNet_preprocessed"], request.dataset)
    if dataset_folder is None:
        raise NnsslError(f"-d {request.dataset}: dataset not planned; run nnUNetv2_plan_and_preprocess -d "
                         f"{request.dataset} first")
    plans_file = os.path.join(dataset_folder, request.plans_name + ".json")
    if not os.path.isfile(plans_file):
        raise NnsslError(f"{plans_file}: plans not found; run nnUNetv2_plan_and_preprocess -d {request.dataset} "
                         f"or pass the plans name with -p")
    with open(plans_file) as f:
        configurations = json.load(f)["configurations"]
    if request.configuration not in configurations:
        raise NnsslError(f"{plans_file}: configuration '{request.configuration}' not found; available: "
                         f"{', '.join(configurations)}")
    method = request.settings.get("method", "mae")
    out = flow1_run_folder(results, os.path.basename(dataset_folder), method, request.plans_name,
                           request.configuration)
    return dataset_folder, out


def _expected_channels(dataset_folder: str) -> int:
    with open(os.path.join(dataset_folder, "dataset.json")) as f:
        return len(json.load(f)["channel_names"])


def prepare(request: PretrainRequest, check_voxels: bool = True) -> tuple[str, list[UnlabeledCase], str | None]:
    """Cheap checks, then (``check_voxels``) the voxel checks; returns (run folder, usable cases, flow-1
    dataset folder or None)."""
    dataset_folder = None
    if request.dataset is not None:
        dataset_folder, out = _flow1_locations(request)
        expected = _expected_channels(dataset_folder)
    else:
        out, expected = os.path.abspath(request.output_folder), None
    if request.continue_run and not run_folder.holds_run(out) and os.path.isdir(out):
        # interrupted while preprocessing: no run yet, but the finished part of the preprocessing is reused
        logger.info("%s: preprocessing was interrupted; resuming it with this command's settings", out)
        request.continue_run = False
    if request.continue_run:
        run_folder.read_run_file(out)
    else:
        run_folder.check_fresh_output(out)
    cases = discover_cases(request.inputs, request.spacing, expected)
    if not check_voxels:
        return out, cases, dataset_folder
    return out, _check_cases(cases, request.blockwise_min_voxels), dataset_folder


def _plan(request: PretrainRequest, cases: list[UnlabeledCase], out: str,
          dataset_folder: str | None) -> PretrainData:
    """Plans and preprocesses (a folder created here is removed again when that fails), then writes the run
    file; returns the ``PretrainData``."""
    created = not os.path.isdir(out)
    try:
        from nnssl.pretraining.pipeline_steps import check_batch_split, plan_and_preprocess

        data = plan_and_preprocess(request, cases, out, dataset_folder)
        check_batch_split(request, data)
    except KeyboardInterrupt:
        raise  # finished preprocessing stays for the next run (unfinished cases are marked .partial)
    except BaseException:
        if created and not request.continue_run:
            shutil.rmtree(out, ignore_errors=True)  # nothing half-written
        raise
    run_folder.write_run_file(out, {"request": asdict(request), "settings": request.settings})
    return data


def run(request: PretrainRequest) -> str:
    """Runs ``nnssl_pretrain``; returns the final checkpoint's path.

    Under ``torchrun`` every process runs the cheap checks; rank 0 alone checks the voxels, plans,
    preprocesses and writes the run file while the others wait, then every process trains on the
    same preprocessed data (``nnssl.pretraining.distributed``: a shared file system across nodes).
    """
    main = distributed.is_main()
    out, cases, dataset_folder = prepare(request, check_voxels=main)
    final = os.path.join(out, FINAL_CHECKPOINT)
    if request.continue_run and os.path.isfile(final):
        if main:
            logger.info("%s: this run is already finished", final)
        return final
    if request.continue_run:
        request.settings = run_folder.read_run_file(out)["settings"]
    batch_size = request.settings.get("batch_size")
    if distributed.world_size() > 1 and batch_size and batch_size < distributed.world_size():
        raise NnsslError(f"-b {batch_size}: smaller than the number of processes ({distributed.world_size()}); "
                         f"every process needs at least one sample of the batch")
    distributed.init(request.device)
    try:
        distributed.barrier()  # every process has checked the output folder before rank 0 writes into it
        data = distributed.run_on_main(lambda: _plan(request, cases, out, dataset_folder),
                                       "planning and preprocessing")
        from nnssl.pretraining.pipeline_steps import pretrain

        return pretrain(request, data, out)
    finally:
        distributed.cleanup()
