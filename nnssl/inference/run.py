"""``nnssl_predict`` over an input folder: checks, the model, every case, and the summary.

Cases in lazily readable formats (TIFF stacks, plane folders, Zarr, OME-Zarr) are predicted block by block
(``case_prediction``); NIfTI, MHA and NRRD cases go to nnU-Net's own predictor unchanged, and come out as
nnU-Net writes them. Everything that can be checked without the model is checked before it is loaded, one
process at a time writes an output folder, and nothing is overwritten: an existing output needs ``--continue``
(finished cases are then kept, unfinished ones resumed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nnssl import distributed
from nnssl.atomic_files import write_json_atomic
from nnssl.errors import NnsslError
from nnssl.inference.output import PARTIAL_SUFFIX, label_image_path, write_tiff_planes
from nnssl.output_folder import OutputLock
from nnssl.volumes.discovery import LAZY_ENDINGS, UnlabeledCase, channel_count, discover_cases
from nnssl.volumes.lazy import open_case_volumes

if TYPE_CHECKING:  # the model and the block loop import torch: not before the cheap checks
    from nnssl.inference.blocks import PredictOptions
    from nnssl.nnunet_adapter.model_request import ModelRequest
    from nnssl.nnunet_adapter.prediction import TrainedModel

logger = logging.getLogger(__name__)

SUMMARY_FILE = "predict_summary.json"
OUTPUT_FORMATS = ("ome-zarr", "tiff-planes")


@dataclass
class PredictRequest:
    """What ``nnssl_predict`` is asked: its flags mean what they mean for ``nnUNetv2_predict``."""

    input_folder: str
    output_folder: str
    model: ModelRequest
    device: str = "cuda"
    step_size: float = 0.5  # sliding-window step, fraction of the patch
    mirroring: bool = True
    resume: bool = False
    output_format: str = "ome-zarr"
    spacing: list[float] | None = None


def check_request(request: PredictRequest, options: PredictOptions) -> None:
    """Checks that need nothing but the request: one-line errors before the model or any image is read."""
    if not os.path.isdir(request.input_folder):
        raise NnsslError(f"{request.input_folder}: no such input folder; pass the folder of images to predict "
                         f"with -i")
    if os.path.abspath(request.input_folder) == os.path.abspath(request.output_folder):
        raise NnsslError(f"{request.output_folder}: the output folder is the input folder; pick another -o")
    if options.block_shape is not None and any(b <= 0 or b % 64 for b in options.block_shape):
        raise NnsslError(f"--block-size {' '.join(map(str, options.block_shape))}: give multiples of 64 "
                         f"(output chunks)")
    if not 0 < request.step_size <= 1:
        raise NnsslError(f"-step_size {request.step_size}: must be in (0, 1]; nnU-Net's default is 0.5")
    if request.output_format not in OUTPUT_FORMATS:
        raise NnsslError(f"output format {request.output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")


def load_model(request: PredictRequest) -> TrainedModel:
    """The trained model on this process's device: under torchrun the process group is joined and each rank
    takes its own GPU; CPU threads are shared among the ranks, one thread drives a GPU (as nnUNetv2_predict)."""
    import torch

    from nnssl.nnunet_adapter.prediction import TrainedModel

    device = request.device
    if distributed.world_size() > 1:
        distributed.init(device)
        if device == "cuda":
            device = f"cuda:{distributed.local_rank()}"
    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // distributed.world_size()))
    elif device.startswith("cuda"):
        torch.set_num_threads(1)
    return TrainedModel(request.model, device, request.step_size, mirroring=request.mirroring)


def final_output(request: PredictRequest, case: UnlabeledCase) -> str:
    """Where a block-wise case's result ends up."""
    if request.output_format == "tiff-planes":
        return os.path.join(request.output_folder, case.identifier)
    return label_image_path(request.output_folder, case.identifier)


def find_cases(request: PredictRequest) -> tuple[list[UnlabeledCase], list[UnlabeledCase]]:
    """(cases to predict block by block, cases for nnU-Net's predictor), checked against existing outputs."""
    cases = discover_cases([request.input_folder], request.spacing)
    lazy = [c for c in cases if c.file_ending in LAZY_ENDINGS]
    todo = []
    for case in lazy:
        open_case_volumes(case)  # headers: unreadable or 2D inputs fail here, before the model loads
        final = final_output(request, case)
        partial = label_image_path(request.output_folder, case.identifier) + PARTIAL_SUFFIX
        if os.path.exists(final):
            if not request.resume:
                raise NnsslError(f"{final}: exists; pass --continue to keep finished cases, or remove it")
            logger.info("%s: finished earlier, kept", case.identifier)
            continue
        if os.path.exists(partial) and not request.resume:
            raise NnsslError(f"{partial}: an unfinished prediction; pass --continue to resume it, or remove it")
        todo.append(case)
    return todo, [c for c in cases if c.file_ending not in LAZY_ENDINGS]


def check_channels(cases: list[UnlabeledCase], expected: int) -> None:
    for case in cases:
        found = channel_count(case)
        if found != expected:
            raise NnsslError(f"{case.image_files[0]}: {found} channel(s), the model takes {expected}; "
                             f"give each case the model's channels (CASE_0000 .. CASE_{expected - 1:04d})")


def delegated_outputs(request: PredictRequest, cases: list[UnlabeledCase], file_ending: str) -> list[UnlabeledCase]:
    """The NIfTI/MHA/NRRD cases still to predict (existing results need --continue and are then kept)."""
    todo = []
    for case in cases:
        target = os.path.join(request.output_folder, case.identifier + file_ending)
        if os.path.exists(target):
            if not request.resume:
                raise NnsslError(f"{target}: exists; pass --continue to keep finished cases, or remove it")
            continue
        todo.append(case)
    return todo


def predict_folder(request: PredictRequest, options: PredictOptions) -> list[dict]:
    """Predicts every case. Cheapest checks first: the request, then that the model exists, then (with the
    output folder locked, so that a second run on it is refused: ``nnssl.output_folder``) the images'
    headers; the model is loaded after them."""
    check_request(request, options)
    from nnssl.nnunet_adapter.prediction import model_folder  # torch and nnunetv2: after the request's checks

    model_folder(request.model)
    with OutputLock(request.output_folder):
        return _predict_locked(request, options)


def _predict_locked(request: PredictRequest, options: PredictOptions) -> list[dict]:
    from nnssl.inference.case_prediction import predict_case

    block_cases, nnunet_cases = find_cases(request)
    model = load_model(request)
    check_channels(block_cases + nnunet_cases, model.num_input_channels)
    nnunet_cases = delegated_outputs(request, nnunet_cases, model.file_ending)
    os.makedirs(request.output_folder, exist_ok=True)
    summaries = []
    for case in block_cases:
        label_image = label_image_path(request.output_folder, case.identifier)
        if request.output_format == "tiff-planes" and os.path.isdir(label_image):  # killed while writing planes
            summary = {"case": case.identifier, "output": label_image, "resumed": "planes"}
        else:
            summary = predict_case(model, case, request.output_folder, options)
            log_case(summary)
        if request.output_format == "tiff-planes" and distributed.is_main():
            write_tiff_planes(summary["output"], final_output(request, case), case.identifier)
            shutil.rmtree(summary["output"])
            summary["output"] = final_output(request, case)
        distributed.barrier()
        summaries.append(summary)
    mine = nnunet_cases[distributed.rank()::distributed.world_size()]
    if mine:
        logger.info("%d NIfTI/MHA/NRRD case(s): nnU-Net's own predictor", len(mine))
        outputs = [os.path.join(request.output_folder, c.identifier) for c in mine]
        model.predict_files([c.image_files for c in mine], outputs, options.save_probabilities, overwrite=True)
        summaries += [{"case": c.identifier, "output": o + model.file_ending, "predictor": "nnU-Net"}
                      for c, o in zip(mine, outputs)]
    if distributed.is_main():
        write_summary(request.output_folder, summaries)
    return summaries


def log_case(summary: dict) -> None:
    logger.info("%s: %d blocks, %d (%.1f%%) without tissue written as background; %.1f s, %.2f Mvoxel/s of "
                "tissue -> %s", summary["case"], summary["blocks"], summary["blocks_skipped"],
                100 * summary["skipped_fraction"], summary["seconds"],
                summary["tissue_voxels"] / max(summary["seconds"], 1e-9) / 1e6, summary["output"])


def write_summary(output_folder: str, summaries: list[dict]) -> None:
    """``predict_summary.json``: one entry per case, earlier runs' entries kept for cases not predicted now."""
    path = os.path.join(output_folder, SUMMARY_FILE)
    entries: dict[str, dict] = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                entries = {e["case"]: e for e in json.load(f)["cases"]}
        except (OSError, ValueError, KeyError, TypeError):
            entries = {}
    entries.update({s["case"]: s for s in summaries})
    write_json_atomic(path, {"cases": list(entries.values())}, indent=1)
