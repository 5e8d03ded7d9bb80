"""Does pretraining learn on real, heavy-tailed microscopy? Every masked method on real volumes.

The pool: the real 3D fluorescence volumes of ``get_real_volumes.sh`` (a widefield neuron stack, a pollen
grain, lattice light-sheet red blood cells, yeast mitochondria: mostly dark, heavy-tailed) plus as many
synthetic light-sheet-like volumes (``tests/synthetic.py``), each kept on its own voxel grid (sidecar
spacing 1 µm). Each method runs ``nnssl_pretrain`` (flow 2, its defaults) with a 4-stage 16-128
PlainConvUNet, patch 32x64x64, batch 2 and ``--steps`` steps on the CPU. A quarter of the cases is held out
(with the default seed: two of the real volumes), and the validation loss is compared with the trivial
answer on the same batches (each hidden voxel predicted as its patch's visible mean; Models Genesis: the
better of handing the corrupted input back and predicting the patch mean).

Per method: the final ``val / trivial`` ratio, and the largest training-loss spike (max over the last 90%
of the steps of batch loss / running median of the previous 25 batch losses). Targets for mae: ratio
<= 0.6, spike <= 5. The last preview and the loss curves of each run are copied to ``--figures``. Per real
volume it also reports how a labelled crop z-scored over itself differs from the same region in the
whole-volume z-score that pretraining sees (``crop_scale``).

    python benchmarks/pretrain_real.py [--methods mae sparkmae modelsgenesis] [--steps 500] [--out DIR]
                                       [--method-arg mae:target_normalization=none ...]

Last line, one JSON object: {"val_over_trivial": {"mae": ...}, "max_spike": {"mae": ...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
METHODS = ("mae", "sparkmae", "modelsgenesis")
ITERATIONS_PER_EPOCH = 25
SPIKE_WINDOW = 25
VAL_FRACTION = 0.25
NETWORK = ["--features-per-stage", "16", "32", "64", "128", "--patch-size", "32", "64", "64", "-b", "2"]


def max_spike(batch_losses: list[float], window: int = SPIKE_WINDOW, skip_fraction: float = 0.1) -> float:
    """Max over the steps after the first ``skip_fraction`` of batch loss / median of the ``window`` before."""
    losses = np.asarray(batch_losses, dtype=float)
    first = max(window, int(np.ceil(skip_fraction * len(losses))))
    ratios = [losses[i] / max(float(np.median(losses[i - window:i])), 1e-12) for i in range(first, len(losses))]
    return float(max(ratios)) if ratios else float("nan")


def write_pool(folder: Path, real_cache: Path, num_synthetic: int) -> list[str]:
    """Real volumes (fetched into ``real_cache`` when missing) and synthetic ones, each with a sidecar of
    spacing 1 so that every volume keeps its own voxel grid. Returns the case names."""
    from nnssl.demo.synthetic import write_image

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: tests/
    from tests.synthetic import make_volume

    if not sorted(real_cache.glob("*_0000.tif")):
        subprocess.run(["bash", str(HERE / "get_real_volumes.sh"), str(real_cache)], check=True,
                       env={**os.environ, "PYTHON": sys.executable}, stdout=subprocess.DEVNULL)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(real_cache.glob("*_0000.tif")):
        name = path.name[: -len("_0000.tif")]
        shutil.copyfile(path, folder / path.name)
        (folder / f"{name}.json").write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
        names.append(name)
    for i in range(num_synthetic):
        image, _ = make_volume((48, 128, 128), seed=700 + i)
        write_image(image, str(folder / f"synthetic_{i:02d}_0000.tif"), (1.0, 1.0, 1.0),
                    sidecar_json=str(folder / f"synthetic_{i:02d}.json"))
        names.append(f"synthetic_{i:02d}")
    return names


def pretrain(method: str, pool: Path, out: Path, steps: int, method_args: list[str], log: Path) -> float:
    """One ``nnssl_pretrain`` run (flow 2) of ``steps`` steps; returns its wall time in seconds."""
    epochs = max(1, round(steps / ITERATIONS_PER_EPOCH))
    command = [str(Path(sys.executable).parent / "nnssl_pretrain"), "-i", str(pool), "-o", str(out), "-m", method,
               *NETWORK, "--epochs", str(epochs), "--iterations-per-epoch", str(ITERATIONS_PER_EPOCH),
               "--val-iterations", "5", "--val-fraction", str(VAL_FRACTION),
               "--preview-every", str(max(1, epochs // 4)), "-device", "cpu", "--num-workers", "1", "--no-pbar"]
    if method_args:
        command += ["--method-arg", *method_args]
    started = time.monotonic()
    with open(log, "w") as f:
        env = {**os.environ, "MPLBACKEND": "Agg"}
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        sys.exit(f"nnssl_pretrain -m {method} failed (exit {result.returncode}); see {log}")
    return time.monotonic() - started


def crop_scale(path: Path, samples: int = 50, crop: tuple[int, int, int] = (60, 64, 64), seed: int = 0) -> dict:
    """How differently a region looks when its volume is z-scored over the whole volume (pretraining, as
    nnU-Net preprocesses it) and when a labelled crop around it is z-scored over itself (fine-tuning on
    crops): medians over crops centred on tissue of the crop's std and mean in whole-volume units (the crop
    z-scored over itself has std 1 and mean 0)."""
    import tifffile

    from nnssl.volumes.tissue_sampling import locations_of_array

    volume = tifffile.imread(path).astype(np.float32)
    whole = (volume - volume.mean()) / volume.std()
    centres = locations_of_array(whole[None])[1][:, 1:]
    rng = np.random.default_rng(seed)
    scales, offsets = [], []
    for centre in centres[rng.integers(len(centres), size=samples)]:
        low = [max(0, min(int(c) - e // 2, n - e)) for c, e, n in zip(centre, crop, volume.shape)]
        box = tuple(slice(lo, lo + e) for lo, e in zip(low, crop))
        scales.append(whole[box].std())
        offsets.append(whole[box].mean())
    return {"scale": round(float(np.median(scales)), 2), "offset": round(float(np.median(offsets)), 2)}


def held_out_cases(cases: list[str]) -> list[str]:
    """The validation cases of every run: nnssl's split with the default seed."""
    from nnssl.pretraining.engine.schedule import split_cases
    from nnssl.pretraining.engine.settings import PretrainSettings

    return split_cases(cases, VAL_FRACTION, PretrainSettings().seed)[1]


def summarize_run(run: Path) -> dict:
    """Final ratio, spike and held-out cases of a finished run (from its run file and checkpoint)."""
    import torch

    from nnssl.checkpoints.layout import FINAL_CHECKPOINT
    from nnssl.pretraining.engine.run_folder import recorded_progress

    progress = recorded_progress(str(run))
    history = torch.load(run / FINAL_CHECKPOINT, map_location="cpu", weights_only=False)["logging"]
    return {"val_over_trivial": progress.get("val_over_trivial"), "val_loss": progress["val_loss"],
            "trivial": progress["val_figures"].get("trivial"),
            "first_val_over_trivial": (progress.get("val_over_trivial_per_epoch") or [None])[0],
            "max_spike": max_spike(history["batch_losses"]), "steps": len(history["batch_losses"])}


def copy_figures(run: Path, figures: Path, method: str) -> list[str]:
    """The run's last preview and its loss curves, as ``pretrain_real_<method>_{preview,progress}.png``."""
    figures.mkdir(parents=True, exist_ok=True)
    copied = []
    previews = sorted((run / "previews").glob("epoch_*.png"))
    for source, kind in ((previews[-1] if previews else None, "preview"), (run / "progress.png", "progress")):
        if source is not None and source.is_file():
            target = figures / f"pretrain_real_{method}_{kind}.png"
            shutil.copyfile(source, target)
            copied.append(str(target))
    return copied


def _method_args(pairs: list[str], method: str) -> list[str]:
    return [p.split(":", 1)[1] for p in pairs if p.split(":", 1)[0] == method]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--synthetic", type=int, default=4, help="synthetic volumes beside the real ones")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--real-volumes", default=os.path.expanduser("~/.cache/nnssl-real-volumes/volumes"))
    parser.add_argument("--figures", default=str(HERE.parent / "docs" / "figures"),
                        help="where the previews and loss curves go (default docs/figures)")
    parser.add_argument("--method-arg", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a method setting, e.g. mae:target_normalization=none (repeatable)")
    args = parser.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="nnssl_pretrain_real_")).resolve()
    if work.exists() and any(work.iterdir()) and args.out:
        sys.exit(f"{work}: not empty; choose another --out")
    env = {f"nnUNet_{k}": str(work / f"nnUNet_{k}") for k in ("raw", "preprocessed", "results")}
    os.environ.update(env)
    try:
        cases = write_pool(work / "pool", Path(args.real_volumes), args.synthetic)
        print(f"pool: {len(cases)} volumes: {', '.join(cases)}", flush=True)
        real = sorted(Path(args.real_volumes).glob("*_0000.tif"))
        scales = {p.name[: -len("_0000.tif")]: crop_scale(p) for p in real}
        print(f"labelled-crop vs whole-volume z-score (std and mean of a crop in whole-volume units): {scales}",
              flush=True)
        results, figures = {}, []
        for method in args.methods:
            run = work / f"run_{method}"
            seconds = pretrain(method, work / "pool", run, args.steps, _method_args(args.method_arg, method),
                               work / f"{method}.log")
            results[method] = {**summarize_run(run), "seconds": round(seconds)}
            figures += copy_figures(run, Path(args.figures), method)
            print(f"{method}: {json.dumps(results[method])}", flush=True)
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "val_over_trivial": {m: round(r["val_over_trivial"], 3) for m, r in results.items()},
        "max_spike": {m: round(r["max_spike"], 2) for m, r in results.items()},
        "targets_met_mae": (results["mae"]["val_over_trivial"] <= 0.6 and results["mae"]["max_spike"] <= 5)
        if "mae" in results else None,
        "crop_vs_volume_zscore": scales, "steps": args.steps, "cases": cases, "held_out": held_out_cases(cases),
        "details": results, "figures": figures,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
