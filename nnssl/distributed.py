"""Process group of a ``torchrun`` launch (DistributedDataParallel pretraining, block-parallel prediction).

``torchrun`` starts one process per GPU and describes the launch in the environment variables
``WORLD_SIZE``, ``RANK`` (global) and ``LOCAL_RANK`` (on this node). Without them, or with a world
size of 1, every function here is a no-op and nnssl runs as a single process.

Global rank 0 is the main process: it alone plans, preprocesses and writes (run file, log,
figures, checkpoints). The other processes wait for it and then read the same files, so a run on
several nodes needs an output folder (and input, plans and preprocessed data) on a file system
that every node sees under the same path.

Only the standard library is imported at module level: the cheap input checks of
``nnssl_pretrain`` run before torch is imported.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Rank 0 plans and preprocesses while the other processes wait in a collective operation (and the
# processes that reach ``init`` first wait there for the last one). Preprocessing a large unlabeled
# collection can take hours, and a collective that waits longer than the process group's timeout
# aborts the run, so the timeout is long. A process that dies does not wait for it: torchrun stops
# the other processes of its node at once, and the processes of other nodes fail as soon as their
# connection to it breaks (at the latest after this timeout).
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=24)


def world_size() -> int:
    """Number of processes of the launch (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """Global rank of this process (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def local_rank() -> int:
    """Rank of this process on its node: the index of its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    """True in global rank 0 and in a single process: the process that writes."""
    return rank() == 0


def _initialized() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _backend_and_device(device: str):
    """('nccl', cuda:LOCAL_RANK) for CUDA, ('gloo', None) for the CPU."""
    import torch

    if device == "cpu":
        return "gloo", None
    if device != "cuda":
        raise NnsslError(f"-device {device}: pretraining with several processes (torchrun) needs -device cuda "
                         f"or -device cpu")
    if not torch.cuda.is_available():
        raise NnsslError("-device cuda: no CUDA device available; use -device cpu (slow) or a GPU machine")
    if local_rank() >= torch.cuda.device_count():
        raise NnsslError(f"LOCAL_RANK {local_rank()}: this node has {torch.cuda.device_count()} CUDA device(s); "
                         f"start at most that many processes per node (torchrun --nproc_per_node)")
    return "nccl", torch.device("cuda", local_rank())


def init(device: str) -> None:
    """Joins the process group of a torchrun launch: NCCL on CUDA (one GPU per process: LOCAL_RANK), gloo
    on the CPU. Processes other than rank 0 log warnings and errors only, so messages appear once."""
    if world_size() == 1 or _initialized():
        return
    import torch
    import torch.distributed as dist

    backend, cuda_device = _backend_and_device(device)
    if cuda_device is not None:
        torch.cuda.set_device(cuda_device)
    dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, device_id=cuda_device)
    if not is_main():
        logging.getLogger("nnssl").setLevel(logging.WARNING)
    logger.info("distributed run: %d processes, backend %s", world_size(), backend)


def barrier() -> None:
    """Waits until every process arrives here."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def cleanup() -> None:
    """Leaves the process group (``destroy_process_group``); safe to call when none was joined."""
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


@dataclass
class _MainFailed:
    """What rank 0 sends instead of a result when it failed."""

    message: str


def run_on_main(fn: Callable[[], T], what: str) -> T:
    """Runs ``fn`` in rank 0 only; the other processes wait and receive its (picklable) result.

    When ``fn`` raises in rank 0, the others raise an ``NnsslError`` that names ``what`` instead of
    waiting; rank 0 re-raises its own error.
    """
    if not _initialized():
        return fn()
    import torch.distributed as dist

    box: list = [None]
    if is_main():
        try:
            box[0] = fn()
        except Exception as e:
            dist.broadcast_object_list([_MainFailed(str(e).strip() or type(e).__name__)], src=0)
            raise
        dist.broadcast_object_list(box, src=0)
        return box[0]
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], _MainFailed):
        raise NnsslError(f"rank 0 failed while {what} ({box[0].message}); see its messages")
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not _initialized():
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def weighted_mean(value: float, weight: float) -> float:
    """The mean of every process's ``value`` weighted by its ``weight``; ``value`` itself in a single process."""
    if not _initialized():
        return value
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    totals = torch.tensor([value * weight, weight], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / totals[1])
