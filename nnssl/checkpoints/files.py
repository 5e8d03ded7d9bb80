"""Checkpoint files: atomic writes, CPU tensors, loadable with ``torch.load(..., weights_only=True)``.

Layout of an nnssl pretraining checkpoint (every value is a plain Python type or a tensor)::

    network_weights        full nnU-Net network state dict (CPU tensors). The reconstruction head sits
                           where nnU-Net's segmentation head sits (``decoder.seg_layers.*``), so stock
                           ``nnUNetv2_train -pretrained_weights`` skips it and loads everything else.
    optimizer_state, grad_scaler_state, current_epoch, iteration_in_epoch, rng_state, logging
                           training state for ``--continue``
    nnssl_metadata         see ``PretrainingLoop.metadata`` in ``nnssl.pretraining.engine.loop``: nnssl version,
                           method + settings, plans, configuration, architecture, channels, spacing,
                           normalization, encoder/stem key prefixes
    nnssl_adaptation_plan  the nnU-Net SSL ecosystem's adaptation plan (``nnssl.checkpoints.adaptation_plan``,
                           docs/checkpoints.md): what nnU-Net's fine-tuning from SSL checkpoints reads
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from nnssl.atomic_files import write_atomic
from nnssl.checkpoints.layout import resolve_checkpoint_path
from nnssl.errors import NnsslError


def to_plain(obj: Any) -> Any:
    """Converts numpy values, tuples and CUDA tensors into types ``weights_only=True`` accepts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def tensor_identity(tensor: torch.Tensor) -> tuple:
    """Same value for aliases of one tensor in a state dict (same object or same storage view, e.g.
    ``decoder.encoder.*`` and ``encoder.*``)."""
    if tensor.numel() == 0:  # empty tensors may share data_ptr 0 without being aliases
        return ("id", id(tensor))
    return ("ptr", tensor.device.type, tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))


def save_atomic(checkpoint: Mapping[str, Any], path: str) -> None:
    """Writes ``checkpoint`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A crash or kill while writing leaves the previous file at ``path`` untouched and no temporary file.
    """
    write_atomic(path, lambda f: torch.save(to_plain(checkpoint), f))


def remove_stale_temporaries(folder: str) -> None:
    """Removes temporary files a killed writer left behind (a SIGKILL cannot clean up after itself)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp_checkpoint_"):
                os.remove(os.path.join(folder, name))


def load_checkpoint(path_or_folder: str) -> dict:
    """Loads an nnssl checkpoint (on the CPU, ``weights_only=True``) from a file or an output folder."""
    path = resolve_checkpoint_path(path_or_folder)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NnsslError(f"{path}: not a readable checkpoint ({first_line}); re-run nnssl_pretrain") from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise NnsslError(f"{path}: has no 'network_weights'; it is not an nnU-Net or nnssl checkpoint")
    return checkpoint
