"""The low-label study's decision rules (benchmarks/low_label_stats.py), on hand-made records: the paired 95%
interval, the best scratch rate, the verdicts and the development phase's choice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import low_label_stats as stats

STRUCTURES = ["nuclei", "vessels"]


def test_paired_difference_is_a_t_interval_of_the_per_seed_differences():
    d = stats.paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])  # differences 0.1, 0.2, 0.3
    half = 4.302652729749464 * 0.1 / 3**0.5  # t(0.975, 2) * sd / sqrt(n)
    assert d["mean"] == pytest.approx(0.2) and d["n"] == 3
    assert (d["low"], d["high"]) == pytest.approx((0.2 - half, 0.2 + half))


def records(arm: str, dice: dict[int, tuple[float, float]], half: dict[int, tuple[float, float]] | None = None,
            seeds=(1, 2, 3), jitter=(0.0, 0.01, -0.01)) -> list[dict]:
    """Two snapshots (epochs 6 and 12) per (k, seed); the final Dice per k is ``dice[k]`` plus a jitter per seed."""
    out = []
    for k, (nuclei, vessels) in dice.items():
        for seed, j in zip(seeds, jitter):
            early = (half or dice)[k]
            common = {"arm": arm, "k": k, "seed": seed, "budget": 1}
            out.append({**common, "epochs": 6, "nuclei": early[0] + j, "vessels": early[1] + j})
            out.append({**common, "epochs": 12, "nuclei": nuclei + j, "vessels": vessels + j})
    return out


def test_best_scratch_rate_verdicts_and_choice():
    recs = (records("scratch_a", {1: (0.5, 0.1), 2: (0.6, 0.2)})
            + records("scratch_b", {1: (0.6, 0.2), 2: (0.6, 0.3)})  # the best scratch rate
            + records("gains", {1: (0.7, 0.25), 2: (0.65, 0.3)}, half={1: (0.65, 0.2), 2: (0.6, 0.3)})
            + records("harms", {1: (0.99, 0.0), 2: (0.99, 0.0)}, jitter=(0.0, 0.0, 0.0)))
    arms = ["scratch_a", "scratch_b", "gains", "harms"]
    summary = stats.summarize(recs, arms, ["scratch_a", "scratch_b"], STRUCTURES, [])
    one = summary[1]
    assert one["scratch"] == "scratch_b"
    gains, harms = one["verdicts"]["gains"], one["verdicts"]["harms"]
    assert gains["do_no_harm"] and gains["gain"] and gains["convergence"]  # +0.1 nuclei at k=1; 50% reach the end
    assert gains["score"] == pytest.approx((0.1 + 0.05 + 0.05 + 0.0) / 4)
    assert not harms["do_no_harm"] and harms["score"] > gains["score"]  # vessels significantly worse
    choice = stats.choose_recipe(summary)
    assert choice["recipe"] == "gains" and choice["best_any"] == "harms"
