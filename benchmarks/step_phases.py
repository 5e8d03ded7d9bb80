"""Where the time of one training step goes: nnU-Net's supervised step against an SSL method's, by phase.

Same data, plans and arms as ``step_cost.py``; per round, in a random arm order: forward (the SSL arm with
its masking and loss, the supervised arm with nnU-Net's deep-supervision loss), backward, gradient
clipping plus SGD step, and the whole ``train_step``. Medians over ``--rounds`` after one warm-up round.

    python benchmarks/step_phases.py [--method mae] [--rounds 8]

Last line, one JSON object: {"method": "mae", "seconds": {"supervised": {...}, "mae": {...}}, "ratios": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_cost

PHASES = ("forward", "backward", "clip_and_step", "train_step")


def _phase_times(loss_fn, parameters: list, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    start = time.perf_counter()
    loss = loss_fn()
    forward = time.perf_counter()
    loss.backward()
    backward = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(parameters, 12)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"forward": forward - start, "backward": backward - forward,
            "clip_and_step": time.perf_counter() - backward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="mae")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="nnssl_step_phases_") as workdir:
        env = step_cost.prepare_dataset(Path(workdir), (32, 64, 64))
        os.environ.update(env, nnUNet_n_proc_DA="0", nnUNet_compile="false")
        trainer, plans, dataset_json, data_folder = step_cost.supervised_trainer(env, device)
        batch = next(trainer.dataloader_train)
        ssl = step_cost.ssl_trainers([args.method], plans, dataset_json, data_folder, device, workdir)[args.method]
        images, generator = batch["data"], torch.Generator().manual_seed(0)
        arms = {
            "supervised": (lambda: trainer.loss(trainer.network(images), batch["target"]),
                           list(trainer.network.parameters()), trainer.optimizer,
                           lambda: trainer.train_step(batch)),
            args.method: (lambda: ssl.train_model(images, generator).loss, ssl.trainable_parameters, ssl.optimizer,
                          lambda: ssl.train_step(images)),
        }
        times = {arm: {phase: [] for phase in PHASES} for arm in arms}
        for index in range(args.rounds + 1):
            for arm in random.Random(index).sample(list(arms), len(arms)):
                loss_fn, parameters, optimizer, train_step = arms[arm]
                phases = _phase_times(loss_fn, parameters, optimizer)
                phases["train_step"] = step_cost.timed(train_step, device)
                if index:  # round 0 warms up
                    for phase, seconds in phases.items():
                        times[arm][phase].append(seconds)
        trainer.on_train_end()
    medians = {arm: {p: round(statistics.median(v), 4) for p, v in phases.items()} for arm, phases in times.items()}
    for arm, phases in medians.items():
        print(f"{arm:>12}: " + ", ".join(f"{p} {s:.3f} s" for p, s in phases.items()))
    ratios = {p: round(medians[args.method][p] / medians["supervised"][p], 3) for p in PHASES}
    print(json.dumps({"device": "cpu", "method": args.method, "rounds": args.rounds, "seconds": medians,
                      "ratios": ratios}))


if __name__ == "__main__":
    main()
