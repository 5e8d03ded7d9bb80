"""The cheap first part of ``nnssl_pretrain``: where the run goes, whether it may go there, which images
it pretrains on and whether they are usable. No torch, no nnU-Net: bad input fails within seconds."""

from __future__ import annotations

import json
import logging
import os

from nnssl.checkpoints.layout import flow1_run_folder, results_root
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.readers import nnunet_reader
from nnssl.nnunet_folders import PREPROCESSED_ENV, nnunet_folder
from nnssl.pretraining.engine import run_folder
from nnssl.pretraining.engine.settings import PretrainRequest
from nnssl.volumes.discovery import UnlabeledCase, discover_cases
from nnssl.volumes.lazy import DEFAULT_BLOCKWISE_MIN_VOXELS, is_large_case
from nnssl.volumes.reading import CaseLoader, ConstantImageError, case_shape, check_case_header, check_case_sample

logger = logging.getLogger(__name__)


def check_cases(cases: list[UnlabeledCase],
                blockwise_min_voxels: int = DEFAULT_BLOCKWISE_MIN_VOXELS) -> list[UnlabeledCase]:
    """Headers first (cheap), then voxels (of a sample of planes for volumes preprocessed block by block);
    constant images are skipped with a warning."""
    for case in cases:
        check_case_header(case)
    usable = []
    loader = CaseLoader({c.identifier: c for c in cases}, nnunet_reader)
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


def describe_cases(cases: list[UnlabeledCase]) -> dict:
    """What the run file records of the images a run pretrains on (``"data"``): per case its name, format
    (file ending; "" for a folder of 2D TIFF planes), channels and (z, y, x) shape, from headers only."""
    described = []
    for case in cases:
        channels, *shape = case_shape(case)
        described.append({"identifier": case.identifier, "format": case.file_ending, "channels": channels,
                          "shape": shape})
    return {"cases": described}


def _flow1_locations(request: PretrainRequest) -> tuple[str, str]:
    """(preprocessed dataset folder, run folder) of flow 1."""
    preprocessed = nnunet_folder(PREPROCESSED_ENV)
    results = results_root()
    dataset_folder = run_folder.find_dataset_folder(preprocessed, request.dataset)
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
    out = flow1_run_folder(results, os.path.basename(dataset_folder), request.settings.method, request.plans_name,
                           request.configuration)
    return dataset_folder, out


def _expected_channels(dataset_folder: str) -> int:
    with open(os.path.join(dataset_folder, "dataset.json")) as f:
        return len(json.load(f)["channel_names"])


def prepare(request: PretrainRequest) -> tuple[str, list[UnlabeledCase], str | None]:
    """The cheap checks (folders, file names, headers; no voxel read); returns (run folder, the cases found,
    flow-1 dataset folder or None). ``check_cases`` checks the voxels."""
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
    return out, discover_cases(request.inputs, request.spacing, expected), dataset_folder
