"""Dice of predicted segmentations against reference labels (for the demo)."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk


def dice(prediction: np.ndarray, reference: np.ndarray, label: int = 1) -> float:
    """Dice coefficient of ``label`` between two arrays of the same shape (1.0 when both are empty)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"shape mismatch: prediction {prediction.shape}, reference {reference.shape}")
    pred = prediction == label
    ref = reference == label
    denominator = int(pred.sum()) + int(ref.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denominator


def folder_dice(
    prediction_folder: str, reference_folder: str, file_ending: str = ".nii.gz"
) -> dict[str, float]:
    """Dice per case for every reference file ``CASE{file_ending}``; a missing prediction raises."""
    scores: dict[str, float] = {}
    for name in sorted(os.listdir(reference_folder)):
        if not name.endswith(file_ending):
            continue
        predicted_file = os.path.join(prediction_folder, name)
        if not os.path.isfile(predicted_file):
            raise FileNotFoundError(f"{predicted_file}: no prediction for reference {name}")
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(predicted_file))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(reference_folder, name)))
        scores[name[: -len(file_ending)]] = dice(prediction, reference)
    if not scores:
        raise FileNotFoundError(f"{reference_folder}: no reference files ending in {file_ending}")
    return scores
