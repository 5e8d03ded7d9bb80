"""``nnssl_plan_like_pretrained``: nnU-Net plans for a downstream dataset that fit a pretrained network.

Example::

    nnssl_plan_like_pretrained -d 501 --pretrained /models/lsm_mae
    nnUNetv2_preprocess -d 501 -plans_name nnsslPlans -c 3d_fullres
    nnUNetv2_train 501 3d_fullres 0 -tr nnSSLTrainer -p nnsslPlans

Arguments are checked here before torch and nnunetv2 are imported, so bad input fails within a second; a
model repository (``--pretrained https://huggingface.co/<org>/<repo>``) is fetched then too.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import TYPE_CHECKING

from nnssl.checkpoints.layout import FINAL_CHECKPOINT
from nnssl.checkpoints.lookup import PretrainedCheckpoint, resolve_pretrained
from nnssl.errors import NnsslError
from nnssl.nnunet_folders import PREPROCESSED_ENV, RAW_ENV, check_name_part, nnunet_folder

if TYPE_CHECKING:
    from nnssl.nnunet_adapter.plan_like_pretrained import PlanLikeResult

PROG = "nnssl_plan_like_pretrained"
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``nnssl_plan_like_pretrained``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write nnU-Net plans (one 3d_fullres configuration) for a downstream dataset that use "
        "the network, spacing, axis order and normalization of an nnssl pretraining. Needs the dataset's "
        "fingerprint (nnUNetv2_extract_fingerprint -d ID).",
    )
    parser.add_argument("-d", "--dataset", required=True, help="downstream dataset id or name, e.g. 501")
    parser.add_argument("--pretrained", required=True,
                        help=f"nnssl_pretrain output folder or its checkpoint file ({FINAL_CHECKPOINT}), a "
                        "checkpoint in the nnU-Net SSL format (network_weights + nnssl_adaptation_plan), or a "
                        "Hugging Face model repository: https://huggingface.co/ORG/REPO or hf://ORG/REPO, "
                        "optionally @REVISION (downloaded into $nnssl_pretrained_models/ORG_REPO)")
    parser.add_argument("-n", "--name", default=None,
                        help="plans name suffix: writes nnsslPlans_NAME.json instead of nnsslPlans.json")
    parser.add_argument("--keep-dataset-spacing", action="store_true",
                        help="keep the dataset's own target spacing instead of the pretraining's")
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="patch size (pretraining axis order); must be divisible by the network's stride")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size instead of nnU-Net's choice")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log diagnostics (incl. the planner's output)")
    return parser


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def validate_arguments(args: argparse.Namespace) -> PretrainedCheckpoint:
    """Checks that need neither torch nor nnunetv2, then finds (or downloads) the checkpoint; raises
    ``NnsslError``."""
    dataset = str(args.dataset)
    if not (dataset.isdigit() or re.fullmatch(r"Dataset\d{3}_.+", dataset)):
        raise NnsslError(f"-d {dataset}: expected a dataset id (e.g. 501) or name (e.g. Dataset501_Cells)")
    for var in (RAW_ENV, PREPROCESSED_ENV):
        nnunet_folder(var)
    if args.name is not None:
        check_name_part("-n", args.name)
    if args.patch_size is not None and any(p < 1 for p in args.patch_size):
        raise NnsslError(f"--patch-size {' '.join(map(str, args.patch_size))}: every entry must be positive")
    if args.batch_size is not None and args.batch_size < 1:
        raise NnsslError(f"--batch-size {args.batch_size}: must be at least 1")
    return resolve_pretrained(args.pretrained, "--pretrained")  # last: it may download


def _summary(result: PlanLikeResult, dataset: str, found: PretrainedCheckpoint) -> str:
    source = [f"source:         {found.source}"] if found.repository else []
    return "\n".join([
        f"plans written:  {result.plans_file}",
        f"next:           nnUNetv2_preprocess -d {dataset} -plans_name {result.plans_name} "
        f"-c {result.configuration}",
        f"configuration:  {result.configuration}",
        f"patch size:     {result.patch_size}",
        f"batch size:     {result.batch_size}",
        f"spacing:        {result.spacing}",
        f"checkpoint:     {result.checkpoint}",
        *source,
    ])


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; exits 2 with one line on stderr for user errors."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        found = validate_arguments(args)
        # imported late on purpose: torch + nnunetv2 take seconds, and bad arguments should not wait for them
        from nnssl.nnunet_adapter.plan_like_pretrained import plan_like_pretrained

        result = plan_like_pretrained(
            args.dataset,
            found,
            name=args.name,
            keep_dataset_spacing=args.keep_dataset_spacing,
            patch_size=args.patch_size,
            batch_size=args.batch_size,
        )
    except NnsslError as e:
        _fail(str(e))
        return
    print(_summary(result, args.dataset, found))


if __name__ == "__main__":
    main()
