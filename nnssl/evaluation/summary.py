"""``summary.json`` in nnU-Net's shape (``nnunetv2.evaluation.evaluate_predictions``): ``metric_per_case``
(a list of {prediction_file, reference_file, metrics: {label: {metric: value}}}), ``mean`` ({label: {metric:
mean over cases}}) and ``foreground_mean`` ({metric: mean over the labels' means}). Means skip NaN (a label
absent from both reference and prediction has NaN Dice); NaN is written as nnU-Net's ``json`` writes it
(``NaN``), keys sorted as nnU-Net sorts them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from nnssl.atomic_files import write_json_atomic


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN when there are none."""
    kept = [float(v) for v in values if not (isinstance(v, float) and math.isnan(v))]
    return sum(kept) / len(kept) if kept else float("nan")


def summarize(per_case: list[dict], labels: Sequence[int]) -> dict:
    """The summary of per-case results ({"prediction_file", "reference_file", "metrics": {str(label): {...}}})."""
    keys = list(per_case[0]["metrics"][str(labels[0])]) if per_case else []
    means = {str(label): {key: nan_mean([case["metrics"][str(label)][key] for case in per_case]) for key in keys}
             for label in labels}
    foreground = [str(label) for label in labels if label != 0]
    foreground_mean = {key: nan_mean([means[label][key] for label in foreground]) for key in keys}
    return {"metric_per_case": per_case, "mean": means, "foreground_mean": foreground_mean}


def write_summary(summary: dict, path: str) -> None:
    """``path`` (written atomically), formatted as nnU-Net's ``save_json`` does (indent 4, sorted keys)."""
    write_json_atomic(path, summary, indent=4, sort_keys=True)


def format_table(summary: dict, columns: Sequence[str]) -> str:
    """Mean of each metric in ``columns`` per label, and their foreground mean, as a plain-text table."""
    rows = [["label", *columns]]
    for label, means in summary["mean"].items():
        rows.append([label, *(f"{means[c]:.4f}" for c in columns)])
    if len(summary["mean"]) > 1:
        rows.append(["mean", *(f"{summary['foreground_mean'][c]:.4f}" for c in columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) + 1)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)
