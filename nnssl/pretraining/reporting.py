"""Human-facing outputs of a pretraining run: text log, loss curves, reconstruction previews."""

from __future__ import annotations

import logging
import os

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
    """Loss curves (train, validation) and learning rate per epoch."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = np.arange(len(history["train_losses"]))
    ax.plot(epochs, history["train_losses"], label="train loss", color="tab:blue")
    if history.get("val_losses"):
        ax.plot(epochs[: len(history["val_losses"])], history["val_losses"], label="val loss", color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked reconstruction loss")
    ax.legend(loc="upper left")
    lr_axis = ax.twinx()
    lr_axis.plot(epochs[: len(history["lrs"])], history["lrs"], label="learning rate", color="tab:gray", ls="--")
    lr_axis.set_ylabel("learning rate")
    fig.tight_layout()
    _save_figure(fig, path)


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
