"""How a run divides its work: the hold-out split of the cases, the batch split over processes, the
learning-rate schedule."""

from __future__ import annotations

import logging
import random

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)


def split_cases(identifiers: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic hold-out split; with a single case, validation reuses it (and says so)."""
    ids = sorted(identifiers)
    if len(ids) < 2 or val_fraction <= 0:
        if len(ids) < 2:
            logger.warning("only one unlabeled case: the validation loss uses the training case")
        return ids, ids
    random.Random(seed).shuffle(ids)
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    return sorted(ids[n_val:]), sorted(ids[:n_val])


def check_batch_size(global_batch_size: int, world_size: int) -> None:
    """Every process needs at least one sample of the batch; an NnsslError naming the fix otherwise."""
    if global_batch_size < world_size:
        raise NnsslError(f"batch size {global_batch_size}: smaller than the number of processes ({world_size}); "
                         f"every process needs at least one sample: pass -b {world_size} or more, or start "
                         f"fewer processes")


def local_batch_size(global_batch_size: int, world_size: int, rank: int) -> int:
    """nnU-Net's DDP split (``nnUNetTrainer._set_batch_size_and_oversample``): every process gets
    ``global // world``, the first ``global % world`` processes one more."""
    check_batch_size(global_batch_size, world_size)
    return global_batch_size // world_size + (1 if rank < global_batch_size % world_size else 0)
