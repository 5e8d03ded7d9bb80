"""The pretraining loop: epochs x iterations, poly LR, AMP on CUDA, gradient clipping, validation,
atomic checkpoints and ``--continue``; DistributedDataParallel under ``torchrun``.

Network, data and augmentation come from nnU-Net through ``nnssl.nnunet_adapter``; the SSL objective
from a registered method (``nnssl.pretraining.methods.registry``).

With several processes (``nnssl.distributed``) every process runs this loop:

* the global batch (``-b`` or the plans') is split over the processes as nnU-Net splits it
  (``local_batch_size``); each process does ``iterations_per_epoch`` steps per epoch;
* process ``r`` seeds its data sampling and masks with ``seed + r``, so the processes see different
  patches and masks (process 0 draws exactly what a single process draws);
* validation runs in every process on its own fixed batches (drawn with ``seed + r``, same masks
  every epoch) with the plain network; the losses are averaged over the processes;
* rank 0 alone writes the log, figures and checkpoints; a checkpoint also holds every process's
  random state and partial-epoch losses (``rank_states``), so ``--continue`` with the same number
  of processes resumes each process where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

import nnssl
from nnssl import distributed
from nnssl.checkpoints import files as ckpt
from nnssl.checkpoints.adaptation_plan import ADAPTATION_PLAN_KEY, adaptation_plan_from_metadata
from nnssl.checkpoints.layout import (
    FINAL_CHECKPOINT,
    LATEST_CHECKPOINT,
    PREVIEWS_FOLDER,
    PROGRESS_FIGURE,
    preview_name,
)
from nnssl.nnunet_adapter import dataloading
from nnssl.nnunet_adapter.network_parts import decoder_parameters
from nnssl.nnunet_adapter.plans_and_networks import (
    build_network,
    encoder_key_prefixes,
    get_configuration,
    unwrap_network,
)
from nnssl.pretraining.engine import run_folder
from nnssl.pretraining.engine.random_state import capture_rng_state, restore_rng_state, seed_everything
from nnssl.pretraining.engine.reporting import (
    describe_figures,
    learning_check_epoch,
    plot_progress,
    progress_summary,
    save_preview,
)
from nnssl.pretraining.engine.schedule import local_batch_size, split_cases
from nnssl.pretraining.engine.settings import PretrainData, PretrainSettings
from nnssl.pretraining.methods.base import SSLMethod, SSLModel
from nnssl.pretraining.methods.registry import create_method, get_method
from nnssl.schedules import warmup_poly_lr

logger = logging.getLogger(__name__)


def unused_head_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter] | None:
    """Parameters no loss reaches: without deep supervision nnU-Net's decoder uses only its last
    segmentation head. None for a network whose decoder this does not recognise."""
    decoder = getattr(network, "decoder", None)
    heads = getattr(decoder, "seg_layers", None)
    if not isinstance(heads, torch.nn.ModuleList) or not hasattr(decoder, "deep_supervision"):
        return None
    if decoder.deep_supervision:
        return []
    return [p for head in heads[:-1] for p in head.parameters()]


class PretrainingLoop:
    """One pretraining run writing into ``output_folder``."""

    def __init__(self, data: PretrainData, settings: PretrainSettings, output_folder: str,
                 device: torch.device, compile_network: bool = False, num_workers: int = 0,
                 progress_bar: bool = True) -> None:
        self.data, self.settings, self.output_folder = data, settings, output_folder
        self.device, self.num_workers, self.progress_bar = device, num_workers, progress_bar
        cm = get_configuration(data.plans, data.configuration)
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        self.patch_size = list(settings.patch_size or cm.patch_size)
        self.global_batch_size = int(settings.batch_size or cm.batch_size)
        self.batch_size = local_batch_size(self.global_batch_size, self.world_size, self.rank)
        self.num_channels = len(data.dataset_json["channel_names"])
        method_class = get_method(settings.method)
        self.method: SSLMethod = create_method(settings.method, self.patch_size, self.num_channels,
                                               settings.method_settings)
        self.network = build_network(data.plans, data.configuration, self.num_channels,
                                     method_class.num_output_channels(self.num_channels)).to(device)
        if not method_class.trains_decoder:  # its loss never reaches the decoder: no state, no all-reduce
            for parameter in decoder_parameters(self.network):
                parameter.requires_grad_(False)
        heads = self.method.build_heads(self.network).to(device)
        if self.world_size > 1 and device.type == "cuda":  # as nnU-Net: BatchNorm statistics over all GPUs
            self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
            heads = torch.nn.SyncBatchNorm.convert_sync_batchnorm(heads)
        compiled = torch.compile(self.network) if compile_network and device.type == "cuda" else None
        self.ssl_model = SSLModel(self.network, heads, self.method, compiled)
        self.trainable_parameters = [p for p in self.ssl_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.trainable_parameters, settings.initial_lr, momentum=0.99,
                                         nesterov=True, weight_decay=settings.weight_decay)
        self.grad_scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
        self.train_model = self._wrap_ddp() if self.world_size > 1 else self.ssl_model
        self.mask_generator = torch.Generator().manual_seed(settings.seed + self.rank)
        self.epoch, self.iteration_in_epoch = 0, 0
        self.history: dict[str, list] = {"train_losses": [], "val_losses": [], "lrs": [], "epoch_times": []}
        self.partial_epoch_losses: list[float] = []
        self._warned_not_learning = False

    def _wrap_ddp(self) -> torch.nn.Module:
        """DistributedDataParallel around the network and the method's modules, as nnU-Net wraps its network.

        The deep-supervision heads that no loss reaches are frozen (they get no gradient in a single
        process either), so DDP needs no search for unused parameters in every step; only for a
        decoder not recognised here does DDP search for them (``find_unused_parameters``).
        """
        unused = unused_head_parameters(self.network)
        for parameter in unused or []:
            parameter.requires_grad_(False)
        device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.ssl_model, device_ids=device_ids,
                                                         find_unused_parameters=unused is None)

    # ----------------------------------------------------------------------------------------- state
    def metadata(self) -> dict:
        plans, cm = self.data.plans, get_configuration(self.data.plans, self.data.configuration)
        architecture = {
            "network_class_name": cm.network_arch_class_name,
            "arch_kwargs": cm.network_arch_init_kwargs,
            "_kw_requires_import": list(cm.network_arch_init_kwargs_req_import),
        }
        return {
            "nnssl_version": nnssl.__version__, "method": self.settings.method,
            "method_settings": self.method.settings(), "plans": plans, "plans_name": plans["plans_name"],
            "configuration": self.data.configuration, "dataset_name": plans["dataset_name"],
            "dataset_json": self.data.dataset_json, "architecture": architecture,
            "num_input_channels": self.num_channels, "patch_size": self.patch_size,
            "spacing": list(cm.spacing), "transpose_forward": plans["transpose_forward"],
            "transpose_backward": plans["transpose_backward"], "normalization_schemes": cm.normalization_schemes,
            "use_mask_for_norm": cm.use_mask_for_norm,
            "foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"],
            **encoder_key_prefixes(self.network),
            "world_size": self.world_size, "global_batch_size": self.global_batch_size,
        }

    def checkpoint(self, rank_states: list[dict] | None = None) -> dict:
        """The checkpoint of this process's state; ``rank_states``: every process's ``_rank_state()``."""
        meta = self.metadata()
        checkpoint = {
            "network_weights": unwrap_network(self.network).state_dict(),
            "method_state": self.ssl_model.heads.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "current_epoch": self.epoch, "iteration_in_epoch": self.iteration_in_epoch,
            "partial_epoch_losses": list(self.partial_epoch_losses),
            "rng_state": capture_rng_state(self.mask_generator),
            "logging": self.history, "settings": asdict(self.settings),
            "nnssl_metadata": meta,
            ADAPTATION_PLAN_KEY: adaptation_plan_from_metadata(meta),
        }
        if rank_states is not None:
            checkpoint["rank_states"] = rank_states
        return checkpoint

    def _rank_state(self) -> dict:
        return {"rng_state": capture_rng_state(self.mask_generator),
                "partial_epoch_losses": list(self.partial_epoch_losses)}

    def save(self, name: str) -> None:
        """Called by every process at the same point (it collects every process's random state); rank 0 writes."""
        rank_states = distributed.all_gather(self._rank_state()) if self.world_size > 1 else None
        if distributed.is_main():
            ckpt.save_atomic(self.checkpoint(rank_states), os.path.join(self.output_folder, name))

    def _own_rank_state(self, state: dict, path: str) -> dict:
        """This process's random state and partial-epoch losses in a checkpoint.

        From a checkpoint of another number of processes, rank 0 takes the stored state and the other
        processes seed afresh (from the seed, their rank and the step reached).
        """
        rank_states = state.get("rank_states") or [state]
        if len(rank_states) == self.world_size:
            return rank_states[self.rank]
        if self.rank == 0:
            logger.warning("%s: written by %d process(es), resumed by %d: the schedule continues; rank 0 restores "
                           "its saved random state, any other process starts a fresh one", path, len(rank_states),
                           self.world_size)
            return state
        step = self.epoch * self.settings.iterations_per_epoch + self.iteration_in_epoch
        seed = self.settings.seed + self.rank + self.world_size * step
        seed_everything(seed)
        self.mask_generator.manual_seed(seed)
        return {"rng_state": None, "partial_epoch_losses": state.get("partial_epoch_losses", [])}

    def restore(self, path: str) -> None:
        state = ckpt.load_checkpoint(path)
        self.network.load_state_dict(state["network_weights"])
        self.ssl_model.heads.load_state_dict(state.get("method_state") or {})
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.grad_scaler is not None and state.get("grad_scaler_state"):
            self.grad_scaler.load_state_dict(state["grad_scaler_state"])
        self.epoch, self.iteration_in_epoch = state["current_epoch"], state["iteration_in_epoch"]
        own = self._own_rank_state(state, path)
        self.partial_epoch_losses = list(own.get("partial_epoch_losses", []))
        self.history = state["logging"]
        if own["rng_state"] is not None:
            restore_rng_state(own["rng_state"], self.mask_generator)
        logger.info("resumed from %s at epoch %d, iteration %d", path, self.epoch, self.iteration_in_epoch)

    # -------------------------------------------------------------------------------------- training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train_step(self, images: torch.Tensor) -> float:
        """One optimizer step on a batch (B, C, Z, Y, X); returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.train_model(images, self.mask_generator).loss
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters, self.settings.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters, self.settings.grad_clip)
            self.optimizer.step()
        s = self.settings
        steps_done = self.epoch * s.iterations_per_epoch + self.iteration_in_epoch + 1
        self.method.after_optimizer_step(self.ssl_model, steps_done / (s.epochs * s.iterations_per_epoch))
        return float(loss.detach())

    @torch.no_grad()
    def validate(self, batches: list[torch.Tensor]) -> tuple[float, dict[str, float], dict]:
        """Mean loss on the fixed validation batches, with fixed masks (comparable across epochs), the
        means of the method's figures on the same batches (``StepOutput.figures``) and a preview.

        Every process validates its own batches with the plain network (no DDP); the means are over all.
        """
        self.ssl_model.eval()
        generator = torch.Generator().manual_seed(self.settings.seed + 1)
        losses, figures, preview = [], defaultdict(list), {}
        for images in batches:
            with self._autocast():
                out = self.ssl_model(images.to(self.device), generator)
            losses.append(float(out.loss))
            for name, value in out.figures.items():
                figures[name].append(float(value))
            preview = preview or out.preview
        self.ssl_model.train()
        weight = len(losses) * self.batch_size
        local = float(np.mean(losses)) if losses else float("nan")
        means = {name: distributed.weighted_mean(float(np.mean(values)), weight)
                 for name, values in sorted(figures.items())}
        return distributed.weighted_mean(local, weight), means, preview

    def _set_lr(self) -> float:
        lr = warmup_poly_lr(self.epoch, self.settings.initial_lr, self.settings.epochs, warmup_steps=0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _run_epoch(self, batches, progress) -> None:
        s = self.settings
        while self.iteration_in_epoch < s.iterations_per_epoch:
            images = next(batches)["data"].to(self.device, non_blocking=True)
            self.partial_epoch_losses.append(self.train_step(images))
            self.iteration_in_epoch += 1
            progress.update(1)
            progress.set_postfix(epoch=self.epoch, loss=f"{self.partial_epoch_losses[-1]:.4f}")
            if s.save_every_iterations and self.iteration_in_epoch % s.save_every_iterations == 0 \
                    and self.iteration_in_epoch < s.iterations_per_epoch:
                self.save(LATEST_CHECKPOINT)

    def _end_epoch(self, lr: float, started: float, val_batches: list[torch.Tensor]) -> None:
        val_loss, figures, preview = self.validate(val_batches)
        train_loss = distributed.weighted_mean(float(np.mean(self.partial_epoch_losses)),
                                               len(self.partial_epoch_losses) * self.batch_size)
        history = self.history
        history["train_losses"].append(train_loss)
        history["val_losses"].append(val_loss)
        history["lrs"].append(lr)
        history["epoch_times"].append(time.time() - started)
        history.setdefault("batch_losses", []).extend(self.partial_epoch_losses)  # this process's
        for name, value in figures.items():
            history.setdefault("val_figures", {}).setdefault(name, []).append(value)
        ratio = val_loss / figures["trivial"] if figures.get("trivial") else None
        if ratio is not None:
            history.setdefault("val_over_trivial", []).append(ratio)
        logger.info("epoch %d: train loss %.4f, val loss %.4f%s, lr %.5f, %.1f s", self.epoch, train_loss, val_loss,
                    describe_figures(figures, ratio), lr, history["epoch_times"][-1])
        self.epoch, self.iteration_in_epoch, self.partial_epoch_losses = self.epoch + 1, 0, []
        if distributed.is_main():
            self._check_learning(ratio)
            self._write_figures(preview)
            run_folder.record_progress(self.output_folder, progress_summary(history, self.epoch))
        self.save(LATEST_CHECKPOINT)

    def _check_learning(self, ratio: float | None) -> None:
        """Warns once when the validation loss is still not below the trivial answer's after
        ``reporting.LEARNING_CHECK_FRACTION`` of the epochs."""
        s = self.settings
        if ratio is None or ratio < 1 or self._warned_not_learning or self.epoch < learning_check_epoch(s.epochs):
            return
        self._warned_not_learning = True
        logger.warning("after %d of %d epochs the validation loss is %.2f x the trivial answer's (each hidden "
                       "voxel predicted as its patch's visible mean): the network does not learn to reconstruct; "
                       "see the previews and docs/methods.md (learning rate, target_normalization)",
                       self.epoch, s.epochs, ratio)

    def _write_figures(self, preview: dict) -> None:
        s = self.settings
        plot_progress(self.history, os.path.join(self.output_folder, PROGRESS_FIGURE))
        if preview and (self.epoch % s.preview_every == 0 or self.epoch == s.epochs):
            os.makedirs(os.path.join(self.output_folder, PREVIEWS_FOLDER), exist_ok=True)
            save_preview(preview, os.path.join(self.output_folder, PREVIEWS_FOLDER, preview_name(self.epoch)),
                         f"{s.method}, epoch {self.epoch}, validation")

    def run(self, resume_from: str | None = None) -> str:
        """Trains to the last epoch; returns the path of the final checkpoint."""
        s, d = self.settings, self.data
        seed_everything(s.seed + self.rank)
        if resume_from:
            self.restore(resume_from)
        train_ids, val_ids = split_cases(d.identifiers, s.val_fraction, s.seed)
        logger.info("pretraining %s on %d cases (%d held out), patch %s, batch %d, device %s", s.method,
                    len(train_ids), len(val_ids) if val_ids != train_ids else 0, self.patch_size,
                    self.batch_size, self.device)
        if self.world_size > 1:
            logger.info("global batch %d over %d processes (%d in this one)", self.global_batch_size,
                        self.world_size, self.batch_size)
        val_batches = dataloading.fixed_validation_batches(d.data_folder, val_ids, self.batch_size, self.patch_size,
                                                           d.plans, s.val_iterations,
                                                           s.seed + self.rank,
                                                           s.random_patch_fraction)
        batches = dataloading.training_batches(d.data_folder, train_ids, self.batch_size, self.patch_size, d.plans,
                                               self.num_workers, self.device.type == "cuda",
                                               s.random_patch_fraction)
        total = s.epochs * s.iterations_per_epoch
        done = self.epoch * s.iterations_per_epoch + self.iteration_in_epoch
        try:
            with tqdm(total=total, initial=done, disable=not (self.progress_bar and distributed.is_main()),
                      unit="it", desc=f"nnssl {s.method}", dynamic_ncols=True) as progress:
                while self.epoch < s.epochs:
                    started, lr = time.time(), self._set_lr()
                    self._run_epoch(batches, progress)
                    self._end_epoch(lr, started, val_batches)
        finally:
            dataloading.shutdown(batches)
        final = os.path.join(self.output_folder, FINAL_CHECKPOINT)
        self.save(FINAL_CHECKPOINT)
        if distributed.is_main():
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.output_folder, LATEST_CHECKPOINT))
        distributed.barrier()  # every process returns once the final checkpoint is written
        logger.info("done: %s", final)
        return final
