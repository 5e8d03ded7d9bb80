"""Samples per second per worker process: nnssl's pretraining loader versus nnU-Net's supervised loader.

Both read the same preprocessed data (a small synthetic labelled dataset, planned and preprocessed by
nnU-Net's CLI, default 3d_fullres plans) with the plans' batch and patch size and nnU-Net's training
augmentation, each in ``--workers`` worker processes:

* nnU-Net: ``nnUNetTrainer.get_dataloaders()`` (its dataset, loader, transforms incl. label handling
  and deep-supervision targets);
* nnssl: ``nnssl.nnunet_adapter.dataloading.training_batches`` (the loader ``nnssl_pretrain`` uses).

Trials are interleaved (nnssl, nnU-Net, nnssl, ...); in each, the loader is started, warmed up with
``--warmup`` batches, then ``--batches`` batches are timed. Rate per worker = samples / s / workers.

    python benchmarks/loader_throughput.py [--trials 5] [--batches 20] [--workers 1]

Last line, one JSON object: {"nnssl_per_worker": ..., "nnunet_per_worker": ..., "ratio": ...}, the
medians over trials and the median of the per-trial ratios (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from step_cost import prepare_dataset, supervised_trainer


def rate(batches, count: int, warmup: int, batch_size: int) -> float:
    """Samples per second over ``count`` batches after ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * batch_size / (time.perf_counter() - start)


def shutdown(batches) -> None:
    finish = getattr(batches, "_finish", None)
    if finish is not None:
        finish()


def nnssl_rate(trainer, data_folder: str, args: argparse.Namespace) -> float:
    from nnssl.nnunet_adapter.dataloading import training_batches

    cm = trainer.configuration_manager
    identifiers = sorted(trainer.get_tr_and_val_datasets()[0].identifiers)
    batches = training_batches(data_folder, identifiers, cm.batch_size, cm.patch_size, trainer.plans_manager.plans,
                               args.workers)
    try:
        return rate(batches, args.batches, args.warmup, cm.batch_size)
    finally:
        shutdown(batches)


def nnunet_rate(trainer, args: argparse.Namespace) -> float:
    train, val = trainer.get_dataloaders()
    try:
        return rate(train, args.batches, args.warmup, trainer.configuration_manager.batch_size)
    finally:
        shutdown(train)
        shutdown(val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per trial (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per trial (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each loader (default 1)")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), help="synthetic image shape")
    args = parser.parse_args()
    nnssl, nnunet = [], []
    with tempfile.TemporaryDirectory(prefix="nnssl_loader_") as workdir:
        env = prepare_dataset(Path(workdir), tuple(args.shape))
        os.environ.update(env, nnUNet_n_proc_DA=str(args.workers), nnUNet_compile="false")
        trainer, _, _, data_folder = supervised_trainer(env, torch.device("cpu"), start=False)
        for trial in range(args.trials):
            nnssl.append(nnssl_rate(trainer, data_folder, args) / max(1, args.workers))
            nnunet.append(nnunet_rate(trainer, args) / max(1, args.workers))
            print(f"trial {trial}: nnssl {nnssl[-1]:.2f}, nnU-Net {nnunet[-1]:.2f} samples/s per worker, "
                  f"ratio {nnssl[-1] / nnunet[-1]:.3f}", flush=True)
    cm = trainer.configuration_manager
    print(json.dumps({"nnssl_per_worker": round(statistics.median(nnssl), 2),
                      "nnunet_per_worker": round(statistics.median(nnunet), 2),
                      "ratio": round(statistics.median(a / b for a, b in zip(nnssl, nnunet)), 3),
                      "trials": args.trials, "workers": args.workers, "batch_size": cm.batch_size,
                      "patch_size": list(cm.patch_size), "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
