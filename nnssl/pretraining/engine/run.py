"""``nnssl_pretrain`` end to end: find and check images (``inputs``), plan (flow 2) or take the dataset's
plans (flow 1) and preprocess with nnU-Net (``preprocessing``), pretrain (``loop``).

Cheap checks (settings, file names, headers, channel counts, output folder) run before torch or nnU-Net is
imported; voxel checks before anything is written.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING

from nnssl import distributed
from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.files import remove_stale_temporaries
from nnssl.checkpoints.layout import DATASET_FILE, FINAL_CHECKPOINT, LATEST_CHECKPOINT, PLANS_FILE
from nnssl.errors import NnsslError
from nnssl.output_folder import OutputLock
from nnssl.pretraining.engine import run_folder
from nnssl.pretraining.engine.inputs import check_cases, describe_cases, prepare
from nnssl.pretraining.engine.schedule import check_batch_size
from nnssl.pretraining.engine.settings import PretrainData, PretrainRequest, saved_settings
from nnssl.volumes.discovery import UnlabeledCase

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def _plan(request: PretrainRequest, cases: list[UnlabeledCase], out: str, dataset_folder: str | None,
          created: bool) -> PretrainData:
    """Plans and preprocesses (the output folder, when this run ``created`` it, is removed again when that
    fails), then writes the run file; returns the ``PretrainData``."""
    try:
        from nnssl.pretraining.engine.plan_and_preprocess import check_batch_split, plan_and_preprocess

        data = plan_and_preprocess(request, cases, out, dataset_folder)
        check_batch_split(request, data)
    except KeyboardInterrupt:
        raise  # finished preprocessing stays for the next run (unfinished cases are marked .partial)
    except BaseException:
        if created and not request.continue_run:
            shutil.rmtree(out, ignore_errors=True)  # nothing half-written
        raise
    run_folder.write_run_file(out, {**request.run_file(), "data": describe_cases(cases)})
    return data


def run(request: PretrainRequest) -> str:
    """Runs ``nnssl_pretrain``; returns the final checkpoint's path.

    Under ``torchrun`` every process runs the cheap checks; rank 0 alone takes the output folder's lock,
    checks the voxels, plans, preprocesses and writes the run file while the others wait, then every
    process trains on the same preprocessed data (``nnssl.distributed``: a shared file system across nodes).
    """
    request.settings.check()
    out, cases, dataset_folder = prepare(request)
    _device(request.device)  # an unavailable device fails with the cheap checks, before any voxel is read
    with OutputLock(out) as lock:  # one run per output folder, before anything is read or written
        return _run_locked(request, cases, out, dataset_folder, lock.created)


def _run_locked(request: PretrainRequest, cases: list[UnlabeledCase], out: str, dataset_folder: str | None,
                created: bool) -> str:
    """``run`` from the voxel checks on, as the only writer of ``out``."""
    main = distributed.is_main()
    if main:
        cases = check_cases(cases, request.blockwise_min_voxels)
    final = os.path.join(out, FINAL_CHECKPOINT)
    if request.continue_run and os.path.isfile(final):
        if main:
            logger.info("%s: this run is already finished", final)
        return final
    if request.continue_run:
        request.settings = saved_settings(run_folder.read_run_file(out)["settings"], request.settings)
    batch_size = request.settings.batch_size
    if batch_size:  # checked before any process group exists (the plans' batch size is checked when loaded)
        check_batch_size(batch_size, distributed.world_size())
    distributed.init(request.device)
    try:
        distributed.barrier()  # every process has checked the output folder before rank 0 writes into it
        data = distributed.run_on_main(lambda: _plan(request, cases, out, dataset_folder, created),
                                       "planning and preprocessing")
        return pretrain(request, data, out)
    finally:
        distributed.cleanup()


def _device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise NnsslError("-device cuda: no CUDA device available; use -device cpu (slow) or a GPU machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise NnsslError("-device mps: MPS is not available on this machine; use -device cpu")
    if name == "cuda" and distributed.world_size() > 1:
        return torch.device("cuda", distributed.local_rank())  # one GPU per process
    return torch.device(name)


def pretrain(request: PretrainRequest, data: PretrainData, out: str) -> str:
    """Writes plans/dataset.json next to the run and trains (resuming from the latest checkpoint if asked).

    Under torchrun every process trains and resumes from the same checkpoint; rank 0 alone writes.
    """

    from nnssl.nnunet_adapter import dataloading
    from nnssl.pretraining.engine.loop import PretrainingLoop
    from nnssl.pretraining.engine.reporting import add_file_log, session_record

    main = distributed.is_main()
    handler = None
    if main:
        os.makedirs(out, exist_ok=True)
        handler = add_file_log(out)
    try:
        if main:
            write_json_atomic(os.path.join(out, PLANS_FILE), data.plans, indent=4)
            write_json_atomic(os.path.join(out, DATASET_FILE), data.dataset_json, indent=4)
        device = _device(request.device)
        if main:
            run_folder.record_session(out, session_record(device, distributed.world_size()))
        workers = dataloading.default_num_workers() if request.num_workers is None else request.num_workers
        latest = os.path.join(out, LATEST_CHECKPOINT)
        resume = latest if request.continue_run and os.path.isfile(latest) else None
        loop = PretrainingLoop(data, request.settings, out, device, request.compile, workers, request.progress_bar)
        if main:
            remove_stale_temporaries(out)
            if request.continue_run and resume is None:
                logger.warning("%s: no checkpoint yet, starting this run from the beginning", out)
        return loop.run(resume_from=resume)
    finally:
        if handler is not None:
            logging.getLogger("nnssl").removeHandler(handler)
            handler.close()
