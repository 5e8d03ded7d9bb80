"""``nnssl_evaluate``: scores predicted label images against references, per case and label, into a
summary.json shaped like nnU-Net's: Dice (and nnU-Net's other overlap metrics), clDice, Betti-0 and Betti-1
errors, and instance F1 / panoptic quality over connected components (panoptica, IoU >= 0.3).

    nnssl_evaluate -ref labelsTs -pred predictions [-l 1 2] [-o summary.json] [-np 4]

Files pair by nnU-Net naming, CASE.<ending> in both folders (NIfTI, MHA, NRRD, TIFF, TIFF-plane folders,
Zarr, OME-Zarr; the endings may differ). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from nnssl.cli.common import run_cli, setup_logging
from nnssl.errors import NnsslError

DESCRIPTION = __doc__
# the metric families of nnssl.evaluation.metrics (named here so that -h needs no heavy import)
FAMILIES = ("overlap", "cldice", "betti", "instances")
DEFAULT_PROCESSES = min(4, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnssl_evaluate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-ref", required=True, metavar="FOLDER", help="folder of reference label images")
    parser.add_argument("-pred", required=True, metavar="FOLDER", help="folder of predicted label images")
    parser.add_argument("-l", "--labels", type=int, nargs="+", default=None, metavar="LABEL",
                        help="labels to score (default: every nonzero label found in the references)")
    parser.add_argument("-o", "--output", default=None, metavar="JSON",
                        help="summary file (default: PRED/summary.json)")
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_PROCESSES,
                        help=f"cases scored in parallel (default {DEFAULT_PROCESSES}); each holds one "
                             "reference and one prediction in memory")
    parser.add_argument("--metrics", nargs="+", choices=FAMILIES, default=list(FAMILIES), metavar="FAMILY",
                        help="metric families: " + ", ".join(FAMILIES) + " (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.num_processes < 1:
        parser.error(f"-np must be >= 1 (got {args.num_processes})")
    if args.labels is not None and min(args.labels) < 0:
        parser.error(f"-l: labels are class numbers >= 0 (got {args.labels})")
    if args.output is not None and not args.output.endswith(".json"):
        parser.error(f"-o must name a .json file (got {args.output})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    setup_logging(args.verbose)
    families = [f for f in FAMILIES if f in args.metrics]  # the canonical order, once each

    def body() -> int:
        for flag, folder in (("-ref", args.ref), ("-pred", args.pred)):
            if not os.path.isdir(folder):  # before the metric libraries are imported (seconds)
                raise NnsslError(f"{folder}: no such folder; check {flag}")
        from nnssl.evaluation.folders import evaluate_folders
        from nnssl.evaluation.metrics import HEADLINE_KEYS
        from nnssl.evaluation.summary import format_table

        output = args.output or os.path.join(args.pred, "summary.json")
        summary = evaluate_folders(args.ref, args.pred, output, args.labels, families, args.num_processes)
        print(format_table(summary, [key for f in families for key in HEADLINE_KEYS[f]]))
        print(f"nnssl_evaluate: summary of {len(summary['metric_per_case'])} case(s): {output}")
        return 0

    return run_cli("nnssl_evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
