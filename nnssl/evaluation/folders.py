"""Scoring a prediction folder against a reference folder: case by case, in worker processes, into
nnU-Net's ``summary.json`` shape."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

import numpy as np

from nnssl.errors import NnsslError
from nnssl.evaluation.files import CasePair, pair_cases, read_segmentation
from nnssl.evaluation.metrics import ALL_FAMILIES, case_metrics
from nnssl.evaluation.summary import summarize, write_summary
from nnssl.worker_processes import die_with_parent

logger = logging.getLogger(__name__)


def reference_labels(reference: str) -> list[int]:
    """The nonzero labels in one reference file."""
    return [int(v) for v in np.unique(read_segmentation(reference)) if v != 0]


def score_case(pair: CasePair, labels: Sequence[int], families: Sequence[str]) -> dict:
    """One case's entry of ``metric_per_case``: {"prediction_file", "reference_file", "metrics": {label: ...}}."""
    reference, prediction = read_segmentation(pair.reference), read_segmentation(pair.prediction)
    if reference.shape != prediction.shape:
        raise NnsslError(f"{pair.prediction}: shape {list(prediction.shape)} differs from its reference "
                         f"{pair.reference} {list(reference.shape)}; predict on the reference's grid")
    metrics = case_metrics(prediction, reference, labels, families)
    return {"prediction_file": pair.prediction, "reference_file": pair.reference,
            "metrics": {str(label): values for label, values in metrics.items()}}


@contextlib.contextmanager
def _workers(num_processes: int, num_cases: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for the whole run (started once: each one imports the metric libraries); ``None``
    where one process does."""
    if num_processes <= 1 or num_cases <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(min(num_processes, num_cases), mp_context=context, initializer=die_with_parent) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the first error stops the cases not yet started
            raise


def _map(function: Callable, calls: list[tuple], pool: ProcessPoolExecutor | None, what: str) -> list:
    """``[function(*c) for c in calls]``, in ``pool`` when there is one; the first error (an ``NnsslError``
    from a worker included) is raised."""
    if pool is None:
        results = []
        for i, call in enumerate(calls):
            results.append(function(*call))
            logger.debug("%s %d/%d done", what, i + 1, len(calls))
        return results
    futures: dict[Future, int] = {pool.submit(function, *call): i for i, call in enumerate(calls)}
    results = [None] * len(calls)
    for done, future in enumerate(as_completed(futures), 1):
        results[futures[future]] = future.result()
        logger.debug("%s %d/%d done", what, done, len(calls))
    return results


def evaluate_folders(reference_folder: str, prediction_folder: str, output_file: str,
                     labels: Sequence[int] | None = None, families: Sequence[str] = ALL_FAMILIES,
                     num_processes: int = 1) -> dict:
    """Scores every reference in ``reference_folder`` against its prediction and writes ``output_file``
    (nnU-Net's summary.json shape); returns the summary. ``labels``: default, every nonzero label found in
    the references."""
    start = time.monotonic()
    pairs = pair_cases(reference_folder, prediction_folder)
    with _workers(num_processes, len(pairs)) as pool:
        if labels is None:
            found = _map(reference_labels, [(p.reference,) for p in pairs], pool, "reference labels")
            labels = sorted(set().union(*found))
            if not labels:
                raise NnsslError(f"{reference_folder}: the references hold no label but 0 (background); "
                                 "name the labels to score with -l")
            logger.info("labels found in the references: %s", labels)
        logger.info("scoring %d case(s), labels %s, metrics %s", len(pairs), list(labels), ", ".join(families))
        per_case = _map(score_case, [(p, list(labels), list(families)) for p in pairs], pool, "case")
    summary = summarize(per_case, list(labels))
    write_summary(summary, output_file)
    logger.info("%d case(s) scored in %.1f s; summary in %s", len(pairs), time.monotonic() - start, output_file)
    return summary
