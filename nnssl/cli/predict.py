"""``nnssl_predict``: a trained nnU-Net model applied to whole organs, block by block, with bounded memory.

    nnssl_predict -i /data/brains -o /data/brains_seg -d 501 -c 3d_fullres -f 0 -tr nnSSLTrainer
    nnssl_predict ... --continue                        # resume a killed run (finished blocks are kept)
    torchrun --nproc_per_node 4 $(which nnssl_predict) ... -device cuda   # four GPUs, disjoint blocks

Flags mean what they mean for nnUNetv2_predict. TIFF stacks, folders of TIFF planes, Zarr and OME-Zarr are
predicted block by block into <case>.ome.zarr (an NGFF label image with a pyramid); NIfTI, MHA and NRRD go to
nnU-Net's own predictor.
"""

from __future__ import annotations

import argparse
import sys

from nnssl.checkpoints.layout import FINAL_CHECKPOINT
from nnssl.cli.common import run_cli, setup_logging
from nnssl.inference.run import OUTPUT_FORMATS

PROG = "nnssl_predict"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-i", required=True, help="input folder (nnU-Net naming CASE_0000.ext, or NAME.ext)")
    parser.add_argument("-o", required=True, help="output folder")
    parser.add_argument("-d", required=True, help="dataset (ID or name) the model was trained on")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer class (default nnUNetTrainer)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-chk", default=FINAL_CHECKPOINT, help=f"checkpoint name (default {FINAL_CHECKPOINT})")
    parser.add_argument("-device", default="cuda", help="cuda, cpu or mps (default cuda)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step, fraction of the patch "
                                                                      "(default 0.5)")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring (faster, slightly worse)")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write <case>_probabilities.zarr (float16, K x Z x Y x X)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="resume unfinished cases, keep finished ones (nothing is overwritten without it)")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default=OUTPUT_FORMATS[0],
                        help="ome-zarr (default): <case>.ome.zarr; tiff-planes: <case>/ with one TIFF per z plane")
    parser.add_argument("--no-skip-empty", dest="skip_empty", action="store_false",
                        help="predict every block, also those without tissue (default: written as background)")
    parser.add_argument("--block-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="output voxels per block, multiples of 64 (default: 256 or 4 patches per axis)")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="spacing of TIFF / plain-Zarr inputs without a sidecar .json")
    parser.add_argument("--disable_progress_bar", action="store_true", help="no progress bar (batch jobs)")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from nnssl import distributed
        from nnssl.inference.blocks import PredictOptions
        from nnssl.inference.run import PredictRequest, predict_folder
        from nnssl.nnunet_adapter.model_request import ModelRequest

        model = ModelRequest(args.d, args.c, args.tr, args.p, tuple(args.f) if args.f else None, args.chk)
        request = PredictRequest(args.i, args.o, model, args.device, args.step_size, not args.disable_tta,
                                 args.resume, args.output_format, args.spacing)
        options = PredictOptions(skip_empty=args.skip_empty, save_probabilities=args.save_probabilities,
                                 block_shape=tuple(args.block_size) if args.block_size else None,
                                 progress_bar=not args.disable_progress_bar)
        summaries = predict_folder(request, options)
        if distributed.is_main():
            print(f"{PROG}: {len(summaries)} case(s) predicted into {args.o}")
        distributed.cleanup()
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
