"""``nnssl_export``: a finished nnssl_pretrain run as a Hugging Face model repository, with its model card.

Example::

    nnssl_export -i /models/lsm_mae -o /models/lsm_mae_hub --license apache-2.0 --repo-id my-lab/lsm-mae
    hf upload my-lab/lsm-mae /models/lsm_mae_hub    # huggingface-cli upload ... before huggingface_hub 1.0
"""

from __future__ import annotations

import argparse
import sys

from nnssl.checkpoints.export import export_run
from nnssl.checkpoints.model_card import BASE_TAGS, PLACEHOLDER_REPO, CardOptions
from nnssl.cli.common import run_cli, setup_logging

PROG = "nnssl_export"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``nnssl_export``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, metavar="RUN_FOLDER",
                        help="output folder of a finished nnssl_pretrain run (flow 1 or 2)")
    parser.add_argument("-o", "--output", required=True, metavar="FOLDER",
                        help="the repository folder to write (new or empty); written completely or not at all")
    parser.add_argument("--license", required=True,
                        help="licence of the weights, as the Hub names it (apache-2.0, mit, cc-by-4.0, ...)")
    parser.add_argument("--repo-id", default=None, metavar="ORG/REPO",
                        help=f"the repository it will be uploaded to, for the commands in the model card "
                             f"(default: {PLACEHOLDER_REPO})")
    parser.add_argument("--list-cases", action="store_true",
                        help="name the pretraining images in the model card (default: counts only)")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help=f"a further model-card tag (repeatable; always: {', '.join(BASE_TAGS)}, the method)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        options = CardOptions(license=args.license, repo_id=args.repo_id, list_cases=args.list_cases,
                              tags=args.tag)
        files = export_run(args.input, args.output, options)
        print(f"{PROG}: wrote {args.output}")
        for name, size in files:
            print(f"  {size:>12,}  {name}")
        print(f"publish it with: hf upload {args.repo_id or PLACEHOLDER_REPO} {args.output}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
