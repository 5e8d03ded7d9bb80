"""Instance metrics of one label over connected components, computed by panoptica (BrainLesion/panoptica),
the package the SELMA3D challenge's 2026 evaluation uses, with its setting: instances are the 26-connected
components of each mask (connected-components-3d), matched one to one by IoU >= 0.3.

F1 is the detection F1 of the matched instances, which panoptica calls recognition quality (RQ =
TP / (TP + (FP + FN) / 2)); SQ is the mean IoU of the matched pairs; PQ = SQ x RQ.
NaN when neither mask holds the label (as nnU-Net's Dice); 0 when only one does.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging

import numpy as np

MATCH_THRESHOLD = 0.3
INSTANCE_KEYS = ("F1", "PQ", "SQ", "instance_TP", "instance_FP", "instance_FN", "n_instances_pred",
                 "n_instances_ref")


@functools.cache
def _panoptica_evaluator():
    """One evaluator per process: semantic input -> connected components -> naive one-to-one IoU matching."""
    from panoptica import (
        CCABackend,
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
        disable_citation_reminder,
    )

    # panoptica prints a citation banner (rich) once per process and logs through its own handler
    disable_citation_reminder()
    logging.getLogger("panoptica").setLevel(logging.WARNING)
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(cca_backend=CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=MATCH_THRESHOLD,
                                                allow_many_to_one=False),
        instance_metrics=[Metric.IOU], global_metrics=[],
    )


def instance_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """F1 (RQ), PQ, SQ and the instance counts of two boolean masks (Z, Y, X)."""
    if not pred.any() and not ref.any():  # panoptica's answer too, but it cannot take an empty (cropped) array
        nan = float("nan")
        return {"F1": nan, "PQ": nan, "SQ": nan, "instance_TP": 0, "instance_FP": 0, "instance_FN": 0,
                "n_instances_pred": 0, "n_instances_ref": 0}
    evaluator = _panoptica_evaluator()
    with contextlib.redirect_stdout(io.StringIO()):  # any console output panoptica may still print
        results = evaluator.evaluate(pred.astype(np.uint8), ref.astype(np.uint8), verbose=False, log_times=False)
    result = next(iter(results.values()))
    return {"F1": float(result.rq), "PQ": float(result.pq), "SQ": float(result.sq),
            "instance_TP": int(result.tp), "instance_FP": int(result.fp), "instance_FN": int(result.fn),
            "n_instances_pred": int(result.n_pred_instances), "n_instances_ref": int(result.n_ref_instances)}
