"""All metrics of one case: per label, the chosen metric families on the label's binary masks.

Families: ``overlap`` (nnU-Net's Dice, IoU, TP/FP/FN/TN, n_pred, n_ref), ``cldice`` (centreline Dice, for
vessels), ``betti`` (Betti-0 and Betti-1 errors) and ``instances`` (detection F1, PQ and SQ over connected
components, for cells and plaques). Everything but ``overlap`` is computed on the bounding box of the two
masks, which gives the same values (the masks are empty outside it) in a fraction of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnssl.evaluation.instances import INSTANCE_KEYS, instance_metrics
from nnssl.evaluation.overlap import OVERLAP_KEYS, overlap_metrics
from nnssl.evaluation.topology import BETTI_KEYS, CLDICE_KEYS, betti_errors, cldice

# family -> (function of two boolean masks (Z, Y, X) -> {key: value}, its keys in order)
FAMILIES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], dict], tuple[str, ...]]] = {
    "overlap": (overlap_metrics, OVERLAP_KEYS),
    "cldice": (lambda pred, ref: {"clDice": cldice(pred, ref)}, CLDICE_KEYS),
    "betti": (betti_errors, BETTI_KEYS),
    "instances": (instance_metrics, INSTANCE_KEYS),
}
ALL_FAMILIES = tuple(FAMILIES)
# the columns of the printed table and of the benchmark: the headline value of each family
HEADLINE_KEYS = {"overlap": ("Dice",), "cldice": ("clDice",), "betti": ("Betti0_error", "Betti1_error"),
                 "instances": ("F1", "PQ")}


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every True voxel; an empty box for an empty mask."""
    if not mask.any():
        return tuple(slice(0, 0) for _ in mask.shape)
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def label_metrics(pred: np.ndarray, ref: np.ndarray, families: Sequence[str] = ALL_FAMILIES) -> dict[str, float]:
    """The metrics of ``families`` for two boolean masks of the same shape (Z, Y, X)."""
    values: dict[str, float] = {}
    if "overlap" in families:
        values.update(overlap_metrics(pred, ref))  # on the whole array: TN counts every voxel
    box = bounding_box(pred | ref)
    pred_box, ref_box = pred[box], ref[box]
    for family in families:
        if family != "overlap":
            values.update(FAMILIES[family][0](pred_box, ref_box))
    return values


def case_metrics(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int],
                 families: Sequence[str] = ALL_FAMILIES) -> dict[int, dict[str, float]]:
    """{label: metrics} of two label images (Z, Y, X) of the same shape."""
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape}, reference {ref.shape}")
    return {label: label_metrics(pred == label, ref == label, families) for label in labels}
