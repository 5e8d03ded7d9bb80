"""Arms of the low-label benchmark (``benchmarks/low_label.py``): fine-tuning recipes, the pretrainings they
start from, and one fine-tuning job (train one arm on one labelled subset at one budget, score its snapshots).

An arm is ``RECIPE`` or ``RECIPE@PRETRAINING``: the recipe names a ``*_lowLabel`` trainer and the settings it
gets before ``initialize()``; the pretraining (default ``mae``) names the checkpoint a pretrained recipe starts
from. ``scratch_*`` recipes start from random weights. Each job runs in a worker process of its own (spawn), so
that several fine-tunes share the CPU cores, and writes its records to ``jobs/<job>.json``, which a
``--continue`` run reuses.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import low_label_parts as parts

from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.lookup import ENV_VAR as PRETRAINED_ENV_VAR  # which checkpoint an arm loads


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning recipe: a trainer of ``low_label_trainers`` and attributes set before ``initialize()``."""

    trainer: str
    settings: dict = field(default_factory=dict)
    pretrained: bool = True


SCRATCH_RATES = {"scratch_lr3e-3": 3e-3, "scratch_lr1e-2": 1e-2, "scratch_lr3e-2": 3e-2}
RECIPES: dict[str, Recipe] = {
    **{name: Recipe("nnUNetTrainer_lowLabel", {"initial_lr": lr}, pretrained=False)
       for name, lr in SCRATCH_RATES.items()},
    # the recipes nnssl ships, at their defaults
    "default": Recipe("nnSSLTrainer_lowLabel"),  # nnU-Net master's PretrainedTrainer: 1e-3, 5% warm-up
    "sawtooth": Recipe("nnSSLTrainer_sawtooth_lowLabel"),
    "discriminative": Recipe("nnSSLTrainer_discriminativeLR_lowLabel"),
    "frozen_encoder": Recipe("nnSSLTrainer_frozenEncoder_lowLabel"),
    "layerwise_decay": Recipe("nnSSLTrainer_layerwiseLRDecay_lowLabel"),
    "full_transfer": Recipe("nnSSLTrainer_fullTransfer_lowLabel"),
    # settings of those recipes sized for a few hundred steps rather than nnU-Net's 250,000
    "default_lr1e-2": Recipe("nnSSLTrainer_lowLabel", {"initial_lr": 1e-2}),
    "discriminative_enc3e-3": Recipe("nnSSLTrainer_discriminativeLR_lowLabel", {"encoder_lr": 3e-3}),
    "sawtooth_lr1e-2": Recipe("nnSSLTrainer_sawtooth_lowLabel", {"initial_lr": 1e-2}),
    "sawtooth_d25_lr1e-2": Recipe("nnSSLTrainer_sawtooth_lowLabel", {"initial_lr": 1e-2, "decoder_fraction": 0.25}),
}


@dataclass(frozen=True)
class Pretraining:
    """One pretraining run: ``nnssl_pretrain -m method`` with ``extra`` options for ``steps_factor`` x the
    fine-tuning steps (of today's budget)."""

    method: str
    steps_factor: int = 10
    extra: tuple[str, ...] = ()


PRETRAININGS: dict[str, Pretraining] = {
    "mae": Pretraining("mae"),  # the defaults: blocks shrunk to at least 8 per patch axis
    "mae_50x": Pretraining("mae", steps_factor=50),
    "mae_coarse": Pretraining("mae", extra=("--method-arg", "min_blocks_per_axis=4")),  # ~1/4 of the axis
    "sparkmae": Pretraining("sparkmae"),
    "sparkmae_coarse": Pretraining("sparkmae", extra=("--method-arg", "min_blocks_per_axis=4")),
}
DEFAULT_PRETRAINING = "mae"
# stage 1 of the development phase: every shipped recipe on the default pretraining, scratch at three rates
DEV_ARMS = (*SCRATCH_RATES, "default", "sawtooth", "discriminative", "frozen_encoder", "layerwise_decay",
            "full_transfer")


def parse_arm(arm: str) -> tuple[Recipe, str | None]:
    """``RECIPE[@PRETRAINING]`` -> (recipe, pretraining name or None for scratch); SystemExit when unknown."""
    name, _, pretraining = arm.partition("@")
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe '{name}' in arm '{arm}'; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if not recipe.pretrained:
        if pretraining:
            raise SystemExit(f"arm '{arm}': a scratch recipe starts from no pretraining")
        return recipe, None
    pretraining = pretraining or DEFAULT_PRETRAINING
    if pretraining not in PRETRAININGS:
        raise SystemExit(f"unknown pretraining '{pretraining}' in arm '{arm}'; known: {', '.join(PRETRAININGS)}")
    return recipe, pretraining


def is_scratch(arm: str) -> bool:
    """True for an arm that trains from random weights."""
    return not parse_arm(arm)[0].pretrained


@dataclass(frozen=True)
class Job:
    """One fine-tune: ``arm`` on ``fold`` (one labelled subset of size ``k``, drawn by ``seed``) for
    ``epochs`` x ``iterations`` steps, scored on ``eval_split`` (``Dev`` or ``Ts``)."""

    arm: str
    fold: int
    k: int
    seed: int
    epochs: int
    iterations: int
    budget: int  # multiple of today's budget
    eval_split: str
    device: str
    checkpoint: str | None  # the pretrained checkpoint (None: scratch)

    @property
    def name(self) -> str:
        return f"{self.arm}__b{self.budget}__k{self.k}_seed{self.seed}"


def trainer_class(arm: str, budget: int) -> type:
    """The arm's trainer as a subclass named after the arm and budget: nnU-Net names the output folder after
    the class, so arms that share a trainer (scratch at three rates) never share a folder."""
    import low_label_trainers

    recipe, _ = parse_arm(arm)
    base = getattr(low_label_trainers, recipe.trainer)
    suffix = re.sub(r"\W", "_", f"{arm}_b{budget}")
    return type(f"{recipe.trainer}__{suffix}", (base,), {"__module__": base.__module__})


def run_job(job: Job, out: str, threads: int) -> list[dict]:
    """Fine-tunes and scores one job in this (worker) process; writes and returns its records."""
    import torch

    torch.set_num_threads(threads)
    os.environ["nnUNet_n_proc_DA"] = "0"
    os.environ.pop(PRETRAINED_ENV_VAR, None)
    if job.checkpoint:
        os.environ[PRETRAINED_ENV_VAR] = job.checkpoint
    recipe, _ = parse_arm(job.arm)
    settings = {"num_epochs": job.epochs, "num_iterations_per_epoch": job.iterations, **recipe.settings}
    t0 = time.monotonic()
    log_file = os.path.join(out, "logs", f"finetune_{job.name}.log")
    trainer = parts.finetune(trainer_class(job.arm, job.budget), job.fold, job.seed, settings, job.device, log_file)
    t1 = time.monotonic()
    cases = parts.load_eval_cases(os.path.join(os.environ["nnUNet_raw"], parts.DATASET_FOLDER), job.eval_split)
    scores = parts.score_snapshots(trainer, cases, job.device)
    timing = {"train_s": round(t1 - t0, 1), "predict_s": round(time.monotonic() - t1, 1)}
    records = [{"arm": job.arm, "k": job.k, "seed": job.seed, "fold": job.fold, "budget": job.budget,
                "epochs": epochs, "fraction": epochs / job.epochs, "steps": epochs * job.iterations,
                **per_structure, **timing}
               for epochs, per_structure in scores.items()]
    write_json_atomic(job_file(out, job), records, indent=1)  # a killed run leaves no half-written job
    return records


def job_file(out: str, job: Job) -> str:
    """Where a job's records live (reused by ``--continue``)."""
    return os.path.join(out, "jobs", job.name + ".json")
