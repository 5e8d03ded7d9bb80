"""Human-facing outputs of a pretraining run: text log, loss curves, reconstruction previews, and the
figures that show whether it learns (``val / trivial``)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files only
import matplotlib.pyplot as plt
import numpy as np
import torch

LOG_FILE = "training_log.txt"


def add_file_log(output_folder: str) -> logging.Handler:
    """Appends nnssl's log records to ``<output_folder>/training_log.txt``."""
    handler = logging.FileHandler(os.path.join(output_folder, LOG_FILE))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("nnssl").addHandler(handler)
    return handler


def _save_figure(fig, path: str) -> None:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def plot_progress(history: dict, path: str) -> None:
    """Loss curves (train, validation) and learning rate per epoch; below them, whether the run learns:
    ``val / trivial`` (restoration methods, with the line at 1 that a learning run stays under) or the
    method's other validation figures (two-view methods: positive- and negative-pair similarity)."""
    figures = history.get("val_figures") or {}
    rows = 2 if figures else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 4.5 * rows), squeeze=False)
    ax = axes[0, 0]
    epochs = np.arange(len(history["train_losses"]))
    batch_losses = history.get("batch_losses") or []
    if len(batch_losses) >= len(epochs) > 0:  # every batch, spread over its epoch: spikes show
        steps = (np.arange(len(batch_losses)) + 0.5) * len(epochs) / len(batch_losses) - 0.5
        ax.plot(steps, batch_losses, ".", ms=2, color="tab:blue", alpha=0.25, label="train loss per batch")
    ax.plot(epochs, history["train_losses"], label="train loss", color="tab:blue")
    if history.get("val_losses"):
        ax.plot(epochs[: len(history["val_losses"])], history["val_losses"], label="val loss", color="tab:red")
    if "trivial" in figures:
        ax.plot(epochs[: len(figures["trivial"])], figures["trivial"], label="val loss of the trivial answer",
                color="tab:red", ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    lr_axis = ax.twinx()
    lr_axis.plot(epochs[: len(history["lrs"])], history["lrs"], label="learning rate", color="tab:gray", ls="--")
    lr_axis.set_ylabel("learning rate")
    if figures:
        _plot_learning_check(axes[1, 0], history, figures)
    fig.tight_layout()
    _save_figure(fig, path)


def _plot_learning_check(ax, history: dict, figures: dict) -> None:
    if history.get("val_over_trivial"):
        ratio = history["val_over_trivial"]
        ax.plot(np.arange(len(ratio)), ratio, color="tab:red", marker=".", label="val loss / trivial answer's")
        ax.axhline(1.0, color="black", lw=0.8, ls="--", label="trivial answer (1)")
        ax.set_ylabel("val / trivial (lower is better)")
    else:
        for name, values in figures.items():
            ax.plot(np.arange(len(values)), values, marker=".", label=name.replace("_", " "))
        ax.set_ylabel("validation figure")
    ax.set_xlabel("epoch")
    ax.legend(loc="upper right")


def save_preview(preview: dict[str, torch.Tensor], path: str, title: str) -> None:
    """Middle slices (z, y, x planes) of the first sample, channel 0, one row per preview entry (the
    method's order, e.g. input / masked / reconstruction).

    ``preview`` tensors are (B, C, Z, Y, X).
    """
    rows = list(preview)[:3]
    volumes = [preview[r][0, 0].detach().float().cpu().numpy() for r in rows]
    low, high = np.percentile(volumes[0], (0.5, 99.5))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for row, (name, volume) in enumerate(zip(rows, volumes)):
        z, y, x = (s // 2 for s in volume.shape)
        for col, (plane, image) in enumerate((("z", volume[z]), ("y", volume[:, y]), ("x", volume[:, :, x]))):
            axes[row, col].imshow(image, cmap="gray", vmin=low, vmax=high, aspect="auto")
            axes[row, col].set_title(f"{name}, middle {plane} slice", fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


LEARNING_CHECK_FRACTION = 0.2  # of the epochs, after which a run still at the trivial answer is warned about


def learning_check_epoch(epochs: int) -> int:
    """The number of finished epochs from which a validation loss not below the trivial answer's is warned about."""
    return max(1, math.ceil(LEARNING_CHECK_FRACTION * epochs))


def describe_figures(figures: dict[str, float], ratio: float | None) -> str:
    """The validation figures for the epoch's log line, e.g. ``", trivial 0.93 (val / trivial 0.61)"``."""
    text = "".join(f", {name.replace('_', ' ')} {value:.4f}" for name, value in figures.items())
    return text + (f" (val / trivial {ratio:.3f})" if ratio is not None else "")


def progress_summary(history: dict, epochs_done: int) -> dict:
    """What the run file records of a run's progress: the last epoch's losses and figures, and the
    ``val / trivial`` ratio of every epoch."""
    summary = {"epochs_done": epochs_done, "train_loss": history["train_losses"][-1],
               "val_loss": history["val_losses"][-1],
               "val_figures": {name: values[-1] for name, values in history.get("val_figures", {}).items()}}
    if history.get("val_over_trivial"):
        summary["val_over_trivial"] = history["val_over_trivial"][-1]
        summary["val_over_trivial_per_epoch"] = history["val_over_trivial"]
    return summary


CPU_INFO = "/proc/cpuinfo"


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows of it."""
    with contextlib.suppress(OSError), open(CPU_INFO) as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def session_record(device: torch.device, processes: int) -> dict:
    """What the run file records of each start of a run (``"sessions"``): when, on which device (and how
    many processes, one per GPU under torchrun), with which processor and torch; the model card reads it."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "Apple GPU (MPS)" if device.type == "mps" else cpu_name()
    return {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device.type,
            "device_name": name, "processes": processes, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__}
