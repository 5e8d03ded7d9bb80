"""What the demo tells about its runs: did pretraining learn, and how Dice grew with fine-tuning steps."""

from __future__ import annotations


def pretraining_ratio(run_folder: str) -> float | None:
    """The last ``val / trivial`` ratio a pretraining run recorded in its run file (None if none)."""
    from nnssl.pretraining.engine.run_folder import recorded_progress

    return recorded_progress(run_folder).get("val_over_trivial")


def pseudo_dice_per_epoch(checkpoint_file: str) -> list[float]:
    """nnU-Net's mean foreground pseudo-Dice on its validation patches after every epoch of a training
    (``logging['mean_fg_dice']`` of its checkpoint)."""
    import torch

    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    return [float(d) for d in checkpoint["logging"]["mean_fg_dice"]]


def plot_dice_vs_steps(curves: dict[str, list[float]], iterations_per_epoch: int, path: str) -> None:
    """One line per arm: pseudo-Dice after each epoch against the fine-tuning steps done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, dice in curves.items():
        steps = [(epoch + 1) * iterations_per_epoch for epoch in range(len(dice))]
        ax.plot(steps, dice, marker="o", label=arm)
    ax.set(xlabel="fine-tuning steps", ylabel="pseudo-Dice (nnU-Net's validation patches)",
           title="Dice vs fine-tuning steps", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


CONFIRMATION_STUDY = ("no recipe beats scratch: the development phase's best (discriminative rates from sparkmae) "
                      "was significantly worse on thin vessels on the held-out confirmation")
"""One line: what the low-label confirmation study found for the default recipe (docs/results.md)."""


def verdict_line(dice: dict[str, dict[str, float]]) -> str:
    """The demo's verdict in one line, from the mean Dice over structures of both arms."""
    difference = dice["pretrained"]["mean"] - dice["scratch"]["mean"]
    outcome = "pretraining paid" if difference >= 0 else "pretraining did NOT pay"
    return (f"verdict: {outcome} on this task: pretrained {dice['pretrained']['mean']:.4f} vs scratch "
            f"{dice['scratch']['mean']:.4f} mean Dice ({difference:+.4f})")
