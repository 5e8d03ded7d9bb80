"""``nnssl_pretrain``: self-supervised pretraining of nnU-Net's network on unlabeled 3D images.

Flow 1 (with an nnU-Net dataset's plans):  nnssl_pretrain -d 501 -i /data/unlabeled
Flow 2 (standalone, nnU-Net plans itself): nnssl_pretrain -i /data/unlabeled -o /models/run
"""

from __future__ import annotations

import argparse
import sys

from nnssl.cli.common import run_cli, setup_logging
from nnssl.pretraining.engine.settings import DEFAULT_METHOD, PretrainRequest, PretrainSettings

DESCRIPTION = __doc__
SETTINGS = PretrainSettings()  # the defaults of every training option
REQUEST = PretrainRequest(inputs=[])  # the defaults of every flow option


def _add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", nargs="+", required=True, metavar="FOLDER",
                        help="folder(s) of unlabeled 3D images, scanned recursively")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-d", "--dataset", help="flow 1: nnU-Net dataset (ID or name) whose plans to pretrain with")
    target.add_argument("-o", "--output", help="flow 2: output folder of a standalone pretraining")
    parser.add_argument("-p", "--plans", default=REQUEST.plans_name,
                        help=f"flow 1: plans name (default {REQUEST.plans_name})")
    parser.add_argument("-c", "--configuration", default=REQUEST.configuration,
                        help=f"configuration (default {REQUEST.configuration})")
    parser.add_argument("-m", "--method", default=DEFAULT_METHOD, help=f"SSL method (default {DEFAULT_METHOD})")
    parser.add_argument("-pl", "--planner", default=REQUEST.planner,
                        help="flow 2: nnU-Net experiment planner, e.g. nnUNetPlannerResEncM "
                             f"(default {REQUEST.planner})")
    parser.add_argument("-gpu_memory_target", type=float, default=None,
                        help="flow 2: GPU memory target (GB) for nnU-Net's planner")
    parser.add_argument("--features-per-stage", type=int, nargs="+", default=None,
                        help="flow 2: keep this many stages of the planned network with these feature counts "
                             "(small networks for CPU runs)")
    parser.add_argument("--channel-names", nargs="+", default=None,
                        help="flow 2: channel names for nnU-Net's normalization choice (default LSM: z-score; "
                             "CT selects CT normalization)")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="spacing of TIFF, plane-folder and plain-Zarr images without a sidecar .json")
    parser.add_argument("--blockwise-min-voxels", type=int, default=REQUEST.blockwise_min_voxels, metavar="N",
                        help="TIFF, plane-folder and Zarr cases with at least N voxels (all channels) are "
                             "preprocessed block by block with bounded memory (default 2**27; 0: always)")
    parser.add_argument("--blockwise-workers", type=int, default=None, metavar="N",
                        help="processes that normalize and compress block-wise cases (default: one per core, "
                             "at most 8; 0: none, all in the main process)")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=SETTINGS.epochs, help=f"default {SETTINGS.epochs}")
    parser.add_argument("--iterations-per-epoch", type=int, default=SETTINGS.iterations_per_epoch,
                        help=f"default {SETTINGS.iterations_per_epoch}")
    parser.add_argument("--val-iterations", type=int, default=SETTINGS.val_iterations,
                        help=f"validation batches per epoch (default {SETTINGS.val_iterations})")
    parser.add_argument("-b", "--batch-size", type=int, default=None, help="default: the plans' batch size")
    parser.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="default: the plans' patch size")
    parser.add_argument("--lr", type=float, default=SETTINGS.initial_lr,
                        help=f"initial learning rate, poly decay (default {SETTINGS.initial_lr})")
    parser.add_argument("--random-patch-fraction", type=float, default=SETTINGS.random_patch_fraction,
                        help="fraction of patches drawn uniformly; the others are centred on tissue found at "
                             f"coarse resolution (default {SETTINGS.random_patch_fraction})")
    parser.add_argument("--val-fraction", type=float, default=SETTINGS.val_fraction,
                        help=f"fraction of cases held out for validation (default {SETTINGS.val_fraction})")
    parser.add_argument("--save-every-iterations", type=int, default=SETTINGS.save_every_iterations,
                        help="also write checkpoint_latest every N iterations (default: once per epoch)")
    parser.add_argument("--preview-every", type=int, default=SETTINGS.preview_every,
                        help="reconstruction preview every N epochs")
    parser.add_argument("--seed", type=int, default=SETTINGS.seed)
    parser.add_argument("-device", "--device", choices=("cuda", "cpu", "mps"), default=REQUEST.device)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA only)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data augmentation processes (default: nnU-Net's nnUNet_n_proc_DA)")
    parser.add_argument("-np", "--num-processes", type=int, default=REQUEST.num_processes,
                        help=f"preprocessing processes (default {REQUEST.num_processes})")
    parser.add_argument("--continue", dest="continue_run", action="store_true",
                        help="resume the run in the output folder from its last checkpoint")
    parser.add_argument("--no-pbar", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")


def build_parser(with_method_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser; ``with_method_defaults`` (for --help) imports the SSL methods to show their defaults."""
    parser = argparse.ArgumentParser(prog="nnssl_pretrain", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_flow_arguments(parser)
    _add_training_arguments(parser)
    defaults = method_defaults if with_method_defaults else _no_defaults
    parser.add_argument("--method-arg", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="a setting of the SSL method, e.g. --method-arg mask_ratio=0.6 block_size=8 "
                             "(settings and defaults: docs/methods.md; recorded in the checkpoint)")
    # shorthands of the masked methods' two main settings (mae, sparkmae)
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help=f"masked methods: fraction of blocks hidden (default {defaults('mask_ratio')})")
    parser.add_argument("--block-size", type=int, default=None,
                        help=f"masked methods: mask block edge in voxels (default {defaults('block_size')}), "
                             f"shrunk so each patch axis holds at least min_blocks_per_axis blocks (default "
                             f"{defaults('min_blocks_per_axis')}, a --method-arg)")
    return parser


def method_defaults(setting: str) -> str:
    """Each registered method's default of ``setting``, read from its signature: "mae 0.75, sparkmae 0.6"."""
    from nnssl.pretraining.methods.registry import available_methods, method_arguments

    found = {name: method_arguments(name).get(setting) for name in available_methods()}
    return ", ".join(f"{name} {value}" for name, value in found.items() if value is not None)


def _no_defaults(setting: str) -> str:
    return "the method's"  # a run's parser: no SSL method (and torch) is imported to build it


def method_settings(args: argparse.Namespace) -> dict:
    """The method's settings from ``--method-arg`` and the shorthands, typed like the method's defaults."""
    from nnssl.pretraining.methods.registry import parse_method_args

    settings = parse_method_args(args.method, args.method_arg)
    for key in ("mask_ratio", "block_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def _request(args: argparse.Namespace) -> PretrainRequest:
    """The request with its typed settings, built once; checked by ``run`` before any image is read."""
    settings = PretrainSettings(
        method=args.method, method_settings=method_settings(args), epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, val_iterations=args.val_iterations,
        batch_size=args.batch_size, patch_size=args.patch_size, initial_lr=args.lr, seed=args.seed,
        save_every_iterations=args.save_every_iterations, preview_every=args.preview_every,
        val_fraction=args.val_fraction, random_patch_fraction=args.random_patch_fraction,
    )
    return PretrainRequest(
        inputs=args.input, dataset=args.dataset, output_folder=args.output, plans_name=args.plans,
        configuration=args.configuration, planner=args.planner, gpu_memory_target=args.gpu_memory_target,
        features_per_stage=args.features_per_stage, channel_names=args.channel_names, spacing=args.spacing,
        device=args.device, compile=args.compile, num_workers=args.num_workers, num_processes=args.num_processes,
        continue_run=args.continue_run, progress_bar=not args.no_pbar, settings=settings,
        blockwise_min_voxels=args.blockwise_min_voxels, blockwise_workers=args.blockwise_workers,
    )


# option, attribute, whether a given value is usable, what it must be: checked before any work starts
_LIMITS = (
    ("--epochs", "epochs", lambda v: v >= 1, ">= 1"),
    ("--iterations-per-epoch", "iterations_per_epoch", lambda v: v >= 1, ">= 1"),
    ("--val-iterations", "val_iterations", lambda v: v >= 1, ">= 1"),
    ("-b", "batch_size", lambda v: v >= 1, ">= 1"),
    ("--patch-size", "patch_size", lambda v: min(v) >= 1, "positive"),
    ("--lr", "lr", lambda v: v > 0, "> 0"),
    ("--random-patch-fraction", "random_patch_fraction", lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    ("--val-fraction", "val_fraction", lambda v: 0.0 <= v < 1.0, "at least 0 and below 1"),
    ("--save-every-iterations", "save_every_iterations", lambda v: v >= 0, ">= 0"),
    ("--preview-every", "preview_every", lambda v: v >= 1, ">= 1"),
    ("--num-workers", "num_workers", lambda v: v >= 0, ">= 0"),
    ("-np", "num_processes", lambda v: v >= 1, ">= 1"),
    ("--blockwise-workers", "blockwise_workers", lambda v: v >= 0, ">= 0"),
    ("--blockwise-min-voxels", "blockwise_min_voxels", lambda v: v >= 0, ">= 0"),
    ("--spacing", "spacing", lambda v: min(v) > 0, "positive"),
    ("--features-per-stage", "features_per_stage", lambda v: min(v) >= 1, "positive"),
)


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for option, attribute, usable, requirement in _LIMITS:
        value = getattr(args, attribute)
        if value is not None and not usable(value):
            parser.error(f"{option} must be {requirement} (got {value})")
    if args.dataset is None and args.plans != REQUEST.plans_name:
        parser.error("-p applies to flow 1 (-d); flow 2 names its plans after the planner (-pl)")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_method_defaults=any(w in ("-h", "--help") for w in words))
    args = parser.parse_args(argv)
    _validate(args, parser)
    setup_logging(args.verbose)

    def body() -> int:
        from nnssl import distributed
        from nnssl.pretraining.engine.run import run

        final = run(_request(args))
        if distributed.is_main():  # under torchrun: once, not once per process
            print(f"nnssl_pretrain: pretrained checkpoint: {final}")
        return 0

    return run_cli("nnssl_pretrain", body)


if __name__ == "__main__":
    sys.exit(main())
