"""Big-volume benchmark: bounded-memory preprocessing and content-aware sampling on a light-sheet-sized volume.

Builds a synthetic light-sheet-like uint16 volume (default 1024 x 2048 x 2048 voxels, 8 GiB raw; a textured
ellipsoid 'organ' in flat background, ~89% background) block by block as compressed BigTIFF and as
OME-Zarr, at spacing 1 1 1 (the spacing nnU-Net's planner then targets: no resampling). For each file:

- read throughput: reading and decompressing the file once (tifffile pages / Zarr chunks), voxels/s,
  median of 3 reads;
- ``nnssl_pretrain`` (flow 2, tiny network, a few CPU iterations, default loader workers) while the summed
  PSS of its whole process tree is sampled every 0.25 s; preprocessing throughput from its log;
- sampling: the tissue fraction of patches placed by nnU-Net's loader with nnssl's tissue locations,
  beside uniform placement (ground truth: the analytic organ mask).

Then the throughput of block-wise preprocessing with a 2x spacing change (in-process). All files are
removed at the end unless --keep. The last line printed is one JSON object.

    python benchmarks/big_volume.py                      # full size, ~25 GB free disk, ~20 min on 2 cores
    python benchmarks/big_volume.py --shape 256 512 512  # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: tests/ fixtures
from bench_utils import GIB, folder_bytes, run_with_peak_pss

from tests import lsm_files


def read_throughput(path: str) -> float:
    """Voxels per second of reading and decompressing the whole file once, as fast as the library allows:
    TIFF pages with as many decode threads as nnssl uses, Zarr chunk rows into one reused buffer."""
    from nnssl.volumes.lazy import decode_threads

    started, voxels = time.perf_counter(), 0
    if path.endswith(".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                voxels += page.asarray(maxworkers=decode_threads()).size
    else:
        import zarr
        from zarr.core.buffer.cpu import NDBuffer

        array = zarr.open(os.path.join(path, "0"), mode="r")
        rows = np.empty((array.chunks[0], *array.shape[1:]), array.dtype)
        for z0 in range(0, array.shape[0], array.chunks[0]):
            out = rows[:min(array.chunks[0], array.shape[0] - z0)]
            array.get_basic_selection(slice(z0, z0 + len(out)), out=NDBuffer.from_numpy_array(out))
            voxels += out.size
    return voxels / (time.perf_counter() - started)


def median_read_throughput(path: str, repeats: int = 3) -> float:
    """Median of ``repeats`` reads (single reads of the same file vary by up to 2x on a shared machine)."""
    return float(np.median([read_throughput(path) for _ in range(repeats)]))


def write_volume(kind: str, folder: str, shape: tuple[int, int, int]) -> str:
    os.makedirs(folder, exist_ok=True)
    make_slab = lsm_files.lsm_like_slab(shape, seed=1)
    if kind == "tiff":
        path = os.path.join(folder, "organ.tiff")
        lsm_files.write_bigtiff(path, shape, np.uint16, make_slab, (1.0, 1.0, 1.0))
    else:
        path = os.path.join(folder, "organ.ome.zarr")
        lsm_files.write_ome_zarr(path, shape, np.uint16, make_slab, (1.0, 1.0, 1.0), levels=2)
    return path


def tissue_fractions(run: str, shape, patch: list[int]) -> tuple[float, float]:
    """(tissue-aware, uniform) fraction of 400 placed patches that hold tissue of the analytic mask."""

    with open(os.path.join(run, "plans.json")) as f:
        plans = json.load(f)
    folder = os.path.join(run, "nnUNet_workspace", "nnUNet_preprocessed", "Dataset999_nnsslPretrain",
                          f"nnssl_{plans['configurations']['3d_fullres']['data_identifier']}")
    mask = lsm_files.tissue_mask_slab(shape)
    fractions = []
    for random_fraction in (0.05, 1.0):
        boxes = lsm_files.sample_patch_boxes(folder, ["organ"], patch, plans, 400, random_fraction, seed=3)
        hits = 0
        for _, lower, upper in boxes:
            z0, z1 = max(0, lower[0]), min(shape[0], upper[0])
            y0, y1, x0, x1 = max(0, lower[1]), min(shape[1], upper[1]), max(0, lower[2]), min(shape[2], upper[2])
            hits += bool(z1 > z0 and y1 > y0 and x1 > x0 and mask(z0, z1, y0, y1, x0, x1).any())
        fractions.append(hits / len(boxes))
    return fractions[0], fractions[1]


def pretrain(path: str, run: str, args: argparse.Namespace) -> dict:
    command = [os.path.join(os.path.dirname(sys.executable), "nnssl_pretrain"), "-i", os.path.dirname(path),
               "-o", run, "-device", "cpu", "--features-per-stage", "8", "16", "32", "--patch-size",
               *map(str, args.patch), "-b", "2", "--epochs", "1", "--iterations-per-epoch", str(args.iterations),
               "--val-iterations", "1", "--no-pbar", "-np", "1", "--blockwise-min-voxels", "0"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    code, peak, output = run_with_peak_pss(command, env)
    if code != 0:
        print(output[-3000:])
        raise SystemExit(f"nnssl_pretrain failed with exit code {code}")
    seconds = float(re.search(r"preprocessed block by block in ([\d.]+) s", output).group(1))
    return {"peak_pss_gib": round(peak, 3), "preprocess_s": seconds}


def resampling_throughput(path: str, workdir: str) -> float:
    """Input voxels per second of block-wise preprocessing to twice the spacing (8x fewer voxels)."""
    from nnssl.pretraining.data.blockwise_preprocessing import BlockwiseTarget, preprocess_large_case
    from nnssl.volumes.discovery import discover_cases
    from nnssl.volumes.lazy import case_voxels

    case = discover_cases([os.path.dirname(path)])[0]
    target = BlockwiseTarget([0, 1, 2], [2.0, 2.0, 2.0], [32, 64, 64], ["ZScoreNormalization"], [False], {})
    out = os.path.join(workdir, "resampled")
    os.makedirs(out)
    started = time.perf_counter()
    preprocess_large_case(case, target, out)
    seconds = time.perf_counter() - started
    shutil.rmtree(out)
    return case_voxels(case) / seconds


def benchmark(kind: str, args: argparse.Namespace, workdir: str) -> dict:
    shape = tuple(args.shape)
    started = time.perf_counter()
    path = write_volume(kind, os.path.join(workdir, kind), shape)
    written_s = time.perf_counter() - started
    size = folder_bytes(os.path.dirname(path))
    read_rate = median_read_throughput(path)
    run = os.path.join(workdir, f"run_{kind}")
    started = time.perf_counter()
    result = pretrain(path, run, args)
    result["pretrain_wall_s"] = round(time.perf_counter() - started, 1)
    voxels = int(np.prod(shape))
    preprocess_rate = voxels / result["preprocess_s"]
    started = time.perf_counter()
    tissue, uniform = tissue_fractions(run, shape, args.patch)
    result["sampling_s"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(run)
    result.update(write_s=round(written_s, 1), file_gib=round(size / GIB, 3),
                  read_mvoxel_s=round(read_rate / 1e6, 1), preprocess_mvoxel_s=round(preprocess_rate / 1e6, 1),
                  throughput_ratio=round(preprocess_rate / read_rate, 3), tissue_fraction=tissue,
                  uniform_tissue_fraction=uniform)
    if kind == args.resample_on:
        result["resample_2x_mvoxel_s"] = round(resampling_throughput(path, workdir) / 1e6, 1)
    shutil.rmtree(os.path.dirname(path))
    for name in os.listdir(workdir):
        if name.startswith(os.path.basename(path).split(".")[0]):
            os.remove(os.path.join(workdir, name))
    print(f"{kind}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[1024, 2048, 2048])
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--formats", nargs="+", default=["tiff", "zarr"], choices=["tiff", "zarr"])
    parser.add_argument("--resample-on", default="tiff", help="format whose 2x-spacing throughput is measured")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder under $TMPDIR")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from nnssl.nnunet_adapter.dataloading import default_num_workers

    workdir = tempfile.mkdtemp(prefix="nnssl_big_volume_", dir=args.workdir)
    try:
        results = {kind: benchmark(kind, args, workdir) for kind in args.formats}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "shape": args.shape, "loader_workers": default_num_workers(), "cpu_count": os.cpu_count(),
        "peak_rss_gib": max(r["peak_pss_gib"] for r in results.values()),
        "throughput_ratio": min(r["throughput_ratio"] for r in results.values()),
        "tissue_fraction": min(r["tissue_fraction"] for r in results.values()),
        "uniform_tissue_fraction": max(r["uniform_tissue_fraction"] for r in results.values()),
        "resample_2x_mvoxel_s": results.get(args.resample_on, {}).get("resample_2x_mvoxel_s"),
        "per_format": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
