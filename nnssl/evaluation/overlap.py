"""Voxel overlap of one label, with nnU-Net's keys and conventions (``nnunetv2.evaluation.evaluate_predictions``):
Dice and IoU are NaN when neither mask holds the label, and NaN is skipped in means."""

from __future__ import annotations

import numpy as np

OVERLAP_KEYS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")


def overlap_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """nnU-Net's per-label metrics of two boolean masks of the same shape (Z, Y, X)."""
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    tn = int(pred.size) - tp - fp - fn
    if tp + fp + fn == 0:
        dice = iou = float("nan")
    else:
        dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    return {"Dice": dice, "IoU": iou, "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": n_pred, "n_ref": n_ref}
