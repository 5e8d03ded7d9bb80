"""Preprocesses unlabeled cases with nnU-Net's own preprocessor into nnssl's own folder.

The result is nnU-Net's on-disk format (``<case>.b2nd`` + ``<case>_seg.b2nd`` + ``<case>.pkl``), the seg
being nnU-Net's nonzero mask. It is written into ``<target>.partial`` and renamed into place only when
every case is done, so an interrupted run never leaves a folder that looks complete. A record of the
inputs and plans lets a later run reuse the folder when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from multiprocessing import get_context

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

RECORD_FILE = "nnssl_preprocessing.json"


def _record(case_files: dict[str, list[str]], plans: dict, configuration: str) -> dict:
    inputs = {
        case_id: [[os.path.abspath(f), os.path.getsize(f), int(os.path.getmtime(f))] for f in files]
        for case_id, files in sorted(case_files.items())
    }
    plans_hash = hashlib.sha256(json.dumps(plans, sort_keys=True).encode()).hexdigest()
    return {"configuration": configuration, "plans_sha256": plans_hash, "inputs": inputs}


def is_up_to_date(folder: str, case_files: dict[str, list[str]], plans: dict, configuration: str) -> bool:
    record_file = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(record_file):
        return False
    with open(record_file) as f:
        stored = json.load(f)
    return stored == json.loads(json.dumps(_record(case_files, plans, configuration)))


def preprocess_one(
    case_id: str, load_case: Callable[[str], tuple[np.ndarray, dict]], plans: dict, configuration: str,
    dataset_json: dict, output_folder: str,
) -> None:
    """Reads, preprocesses (transpose, crop, normalize, resample) and saves one case."""
    plans_manager = PlansManager(plans)
    cm = plans_manager.get_configuration(configuration)
    data, properties = load_case(case_id)
    preprocessor = cm.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, cm, dataset_json)
    properties["class_locations"] = {}  # no labels: nnU-Net's loader never oversamples foreground here
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(cm.patch_size), data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(cm.patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, os.path.join(output_folder, case_id),
                                  chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def _run_all(case_ids, load_case, plans, configuration, dataset_json, partial, num_processes) -> None:
    args = [(c, load_case, plans, configuration, dataset_json, partial) for c in case_ids]
    if num_processes <= 1 or len(case_ids) <= 1:
        for a in args:
            preprocess_one(*a)
        return
    with get_context("spawn").Pool(min(num_processes, len(case_ids))) as pool:
        pool.starmap(preprocess_one, args)


def preprocess_cases(
    case_files: dict[str, list[str]],
    load_case: Callable[[str], tuple[np.ndarray, dict]],
    plans: dict,
    configuration: str,
    dataset_json: dict,
    output_folder: str,
    num_processes: int = 1,
) -> list[str]:
    """Preprocesses every case of ``case_files`` into ``output_folder``; returns the case identifiers.

    ``load_case(case_id)`` returns (data (C, Z, Y, X), properties with 'spacing') and must be picklable
    when ``num_processes > 1``.
    """
    if not case_files:
        raise NnsslError("no usable unlabeled case left to preprocess; add 3D images to the input folder")
    if is_up_to_date(output_folder, case_files, plans, configuration):
        logger.info("%s: preprocessed data is up to date, reusing it", output_folder)
        return sorted(case_files)
    partial = output_folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        _run_all(sorted(case_files), load_case, plans, configuration, dataset_json, partial, num_processes)
        with open(os.path.join(partial, RECORD_FILE), "w") as f:
            json.dump(_record(case_files, plans, configuration), f, indent=1)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = output_folder + ".old"
    if os.path.isdir(output_folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_folder, old)
    os.replace(partial, output_folder)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(case_files)
