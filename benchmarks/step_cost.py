"""Wall time per training step of every registered SSL method versus nnU-Net's supervised step.

Writes a small synthetic labelled dataset, plans and preprocesses it with nnU-Net's own CLI (default
3d_fullres plans), then, in one process:

* supervised: ``nnUNetTrainer`` built and initialized by nnU-Net, timed on its own ``train_step``
  (deep supervision, Dice + CE) with batches from its own data loader;
* each SSL method: nnssl's ``PretrainingLoop.train_step`` on the same plans, configuration, network, batch
  size and patch size, with the same images.

Steps are interleaved A/B (one step of every arm per round, in a new random order every round) to
spread the machine's noise; the figure is the median over ``--steps`` rounds after ``--warmup`` rounds.
Data loading is not timed (batches are drawn before). On CUDA both sides use AMP (nnU-Net's and
nnssl's own autocast + GradScaler).

    python benchmarks/step_cost.py [--device cpu|cuda] [--steps 15] [--warmup 2] [--methods mae ...]

Last line, one JSON object: {"device": "cpu", "ratios": {"mae": 0.9, ...}, ...}; ratio = SSL step time
/ supervised step time (target <= 1.00 for masked modeling).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DATASET_ID = 990


def prepare_dataset(root: Path, shape: tuple[int, int, int]) -> dict[str, str]:
    """nnU-Net folders under ``root`` with a planned and preprocessed synthetic dataset; returns the env."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/ fixtures
    from tests.synthetic import write_labeled_dataset

    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results")}
    for folder in env.values():
        os.makedirs(folder, exist_ok=True)
    write_labeled_dataset(env["nnUNet_raw"], DATASET_ID, num_cases=5, shape=shape, num_test_cases=0)
    result = subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d",
                             str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"],
                            env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"nnUNetv2_plan_and_preprocess failed:\n{result.stderr[-3000:]}")
    return env


def supervised_trainer(env: dict[str, str], device: torch.device, start: bool = True):
    """nnU-Net's ``nnUNetTrainer`` for fold 0, initialized (and, with ``start``, with its loaders running)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    preprocessed = next(Path(env["nnUNet_preprocessed"]).glob(f"Dataset{DATASET_ID}_*"))
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = nnUNetTrainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, device=device)
    trainer.initialize()
    if start:
        trainer.on_train_start()  # nnU-Net's own loaders, splits, network.train()
    return trainer, plans, dataset_json, str(preprocessed / trainer.configuration_manager.data_identifier)


def ssl_trainers(methods: list[str], plans: dict, dataset_json: dict, data_folder: str, device: torch.device,
                 workdir: str) -> dict:
    from nnssl.pretraining.engine.loop import PretrainingLoop
    from nnssl.pretraining.engine.settings import PretrainData, PretrainSettings

    data = PretrainData(plans, "3d_fullres", dataset_json, data_folder, identifiers=[])
    return {name: PretrainingLoop(data, PretrainSettings(method=name), os.path.join(workdir, name), device,
                                  progress_bar=False) for name in methods}


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(trainer, pretrainers: dict, batches: list[dict], device: torch.device, rounds: int,
            warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Step times per arm (after warm-up) and, on CUDA, each arm's peak GPU memory in GiB."""
    times: dict[str, list[float]] = {"supervised": [], **{name: [] for name in pretrainers}}
    peak_gib: dict[str, float] = {}
    for index in range(warmup + rounds):
        batch = batches[index % len(batches)]
        images = batch["data"].to(device, non_blocking=True)
        arms = [("supervised", lambda b=batch: trainer.train_step(b))]
        arms += [(name, lambda p=p, x=images: p.train_step(x)) for name, p in pretrainers.items()]
        # a new order every round: no arm always runs after the same one (allocator and cache state)
        random.Random(index).shuffle(arms)
        for name, step in arms:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            elapsed = timed(step, device)
            if device.type == "cuda":
                peak_gib[name] = max(peak_gib.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
            if index >= warmup:
                times[name].append(elapsed)
        print(f"round {index + 1}/{warmup + rounds}" + ("" if index >= warmup else " (warm-up)") + ": "
              + ", ".join(f"{name} {timed_s:.3f} s" for name, timed_s in ((n, t[-1]) for n, t in times.items() if t)),
              file=sys.stderr, flush=True)
    return times, peak_gib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), help="synthetic image shape")
    args = parser.parse_args()
    from nnssl.pretraining.methods.registry import available_methods

    methods = args.methods or available_methods()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="nnssl_step_cost_") as workdir:
        env = prepare_dataset(Path(workdir), tuple(args.shape))
        # batches come from the main process (nnU-Net's planner fails with 0 workers, so set only now)
        os.environ.update(env, nnUNet_n_proc_DA="0", nnUNet_compile="false")
        trainer, plans, dataset_json, data_folder = supervised_trainer(env, device)
        batches = [next(trainer.dataloader_train) for _ in range(4)]
        pretrainers = ssl_trainers(methods, plans, dataset_json, data_folder, device, workdir)
        times, peak_gib = measure(trainer, pretrainers, batches, device, args.steps, args.warmup)
        trainer.on_train_end()
    medians = {name: statistics.median(t) for name, t in times.items()}
    cm = trainer.configuration_manager
    for name, median in medians.items():
        print(f"{name:>14}: {median:.4f} s/step (median of {len(times[name])})  "
              f"ratio {median / medians['supervised']:.3f}")
    print(json.dumps({"device": device.type, "patch_size": list(cm.patch_size), "batch_size": cm.batch_size,
                      "features_per_stage": cm.network_arch_init_kwargs.get("features_per_stage"),
                      "s_per_step": {k: round(v, 4) for k, v in medians.items()},
                      "peak_gpu_memory_gib": {k: round(v, 2) for k, v in peak_gib.items()},
                      "ratios": {k: round(v / medians["supervised"], 3) for k, v in medians.items()
                                 if k != "supervised"}}))


if __name__ == "__main__":
    main()
