"""Preprocesses unlabeled cases with nnU-Net's own preprocessor into nnssl's own folder.

The result is nnU-Net's on-disk format (``<case>.b2nd`` + ``<case>_seg.b2nd`` + ``<case>.pkl``), the seg
being nnU-Net's nonzero mask. Volumes too large for memory are handed to a block-wise writer instead
(``large_case_writer``), which writes the same format. Each case's tissue locations go into
``class_locations`` (``nnssl.volumes.tissue_sampling``).

Everything is written into ``<target>.partial`` and renamed into place only when every case is done, so
an interrupted run never leaves a folder that looks complete. An interrupted run is resumed: cases whose
``.pkl`` exists are kept, the others redone (block-wise cases continue at their next slab), provided the
inputs and plans are unchanged. A record of the inputs and plans lets a later run reuse the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from multiprocessing import get_context

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl.atomic_files import write_json_atomic
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter import case_store
from nnssl.volumes.tissue_sampling import locations_of_array
from nnssl.worker_processes import die_with_parent

logger = logging.getLogger(__name__)

RECORD_FILE = "nnssl_preprocessing.json"
PENDING_RECORD_FILE = "nnssl_preprocessing.pending.json"
LargeCaseWriter = Callable[[str, str], None]  # (case id, folder) -> writes the case block by block


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
    data = data.astype(np.float32, copy=False)
    properties["class_locations"] = locations_of_array(data)  # tissue, not labels: there are none
    seg = seg.astype(np.int16, copy=False)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(cm.patch_size), data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(cm.patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, os.path.join(output_folder, case_id),
                                  chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def _run_all(case_ids, load_case, plans, configuration, dataset_json, partial, num_processes) -> None:
    for case_id in case_ids:
        case_store.remove_incomplete(partial, case_id)
    args = [(c, load_case, plans, configuration, dataset_json, partial) for c in case_ids]
    if num_processes <= 1 or len(case_ids) <= 1:
        for a in args:
            preprocess_one(*a)
        return
    with get_context("spawn").Pool(min(num_processes, len(case_ids)), initializer=die_with_parent) as pool:
        pool.starmap(preprocess_one, args)


def _open_partial(partial: str, record: dict) -> None:
    """Keeps an interrupted run's folder when it was made from the same inputs and plans, else starts anew."""
    pending = os.path.join(partial, PENDING_RECORD_FILE)
    if os.path.isfile(pending):
        with open(pending) as f:
            if json.load(f) == json.loads(json.dumps(record)):
                return
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    write_json_atomic(pending, record, indent=1)


def preprocess_cases(
    case_files: dict[str, list[str]],
    load_case: Callable[[str], tuple[np.ndarray, dict]],
    plans: dict,
    configuration: str,
    dataset_json: dict,
    output_folder: str,
    num_processes: int = 1,
    large_cases: frozenset[str] = frozenset(),
    large_case_writer: LargeCaseWriter | None = None,
) -> list[str]:
    """Preprocesses every case of ``case_files`` into ``output_folder``; returns the case identifiers.

    ``load_case(case_id)`` returns (data (C, Z, Y, X), properties with 'spacing') and must be picklable
    when ``num_processes > 1``. Cases in ``large_cases`` go to ``large_case_writer`` instead.
    """
    if not case_files:
        raise NnsslError("no usable unlabeled case left to preprocess; add 3D images to the input folder")
    if is_up_to_date(output_folder, case_files, plans, configuration):
        logger.info("%s: preprocessed data is up to date, reusing it", output_folder)
        return sorted(case_files)
    partial = output_folder + ".partial"
    record = _record(case_files, plans, configuration)
    _open_partial(partial, record)
    todo = [c for c in sorted(case_files) if not case_store.is_complete(partial, c)]
    if len(todo) < len(case_files):
        logger.info("%s: resuming, %d of %d cases already done", partial, len(case_files) - len(todo),
                    len(case_files))
    small = [c for c in todo if c not in large_cases]
    _run_all(small, load_case, plans, configuration, dataset_json, partial, num_processes)
    for case_id in (c for c in todo if c in large_cases):
        logger.info("%s: preprocessing block by block (larger than the whole-volume limit)", case_id)
        started = time.perf_counter()
        large_case_writer(case_id, partial)
        logger.info("%s: preprocessed block by block in %.1f s", case_id, time.perf_counter() - started)
    os.replace(os.path.join(partial, PENDING_RECORD_FILE), os.path.join(partial, RECORD_FILE))
    old = output_folder + ".old"
    if os.path.isdir(output_folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_folder, old)
    os.replace(partial, output_folder)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(case_files)
