"""Statistics of the low-label benchmark (``benchmarks/low_label.py``): Dice per arm, k and structure over
seeds, paired differences against the best scratch arm with 95% t intervals, the targets' verdicts, the
development phase's choice of one recipe, tables and plots.

Rules (written down before the confirmation run, docs/results.md "Protocol"):
- scratch is the best of the ``scratch_*`` arms on the same split: the highest mean final Dice over the low
  ks (``LOW_KS``) and both structures;
- an arm does no harm when the upper bound of its 95% interval against scratch is >= 0 at every low k and
  structure;
- the development phase picks, among the arms that do no harm, the one with the highest mean paired
  difference over the low ks and both structures, at today's budget (``CHOICE_BUDGET``);
- gain: >= ``GAIN_TARGET`` Dice with the interval above 0 for at least one structure at k = 1;
- convergence: at every low k, for at least one structure, the arm's Dice after half of the steps reaches
  scratch's final Dice.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

GAIN_TARGET = 0.03
LOW_KS = (1, 2)
GAIN_K = 1
CONFIDENCE = 0.95
CHOICE_BUDGET = 1


def paired_difference(pretrained: list[float], scratch: list[float]) -> dict:
    """Mean of the per-seed differences pretrained - scratch and its 95% t confidence interval."""
    from scipy import stats

    d = np.asarray(pretrained) - np.asarray(scratch)
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": len(d)}
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(d)}


def _per_seed(records: list[dict], structures: list[str]) -> dict[tuple, dict[int, float]]:
    by_seed: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in records:
        for s in structures:
            if s in r:  # the second metrics are scored at the last snapshot only
                by_seed[(r["arm"], r["k"], s, r["epochs"])][r["seed"]] = r[s]
    return by_seed


def _mean_sd(values: dict[int, float]) -> tuple[float, float]:
    v = list(values.values())
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _verdicts(difference: dict, steps: dict, scratch_final: dict, low: list[int], half: int) -> dict:
    """do_no_harm, gain and convergence of one arm (see the module docstring)."""
    structures = list(difference)
    return {
        "score": float(np.mean([difference[s][k]["mean"] for s in structures for k in low])),
        "do_no_harm": all(difference[s][k]["high"] >= 0 for s in structures for k in low),
        "gain": any(difference[s][GAIN_K]["mean"] >= GAIN_TARGET and difference[s][GAIN_K]["low"] > 0
                    for s in structures if GAIN_K in difference[s]),
        "convergence": any(all(steps[k][s][half] >= scratch_final[k][s][0] for k in low) for s in structures),
    }


def summarize_budget(records: list[dict], arms: list[str], scratch_arms: list[str], structures: list[str],
                     second_metrics: list[str]) -> dict:
    """Per-arm Dice (mean, sd over seeds) at the end and at every snapshot, the best scratch arm, each
    pretrained arm's paired differences against it and its verdicts, and the final (mean, sd) of each of
    ``second_metrics`` (record keys such as "nuclei_F1"); ``records`` of one budget."""
    by_seed = _per_seed(records, structures + second_metrics)
    ks = sorted({r["k"] for r in records})
    epochs = sorted({r["epochs"] for r in records})
    final = {a: {k: {s: _mean_sd(by_seed[(a, k, s, epochs[-1])]) for s in structures} for k in ks} for a in arms}
    steps = {a: {k: {s: [_mean_sd(by_seed[(a, k, s, e)])[0] for e in epochs] for s in structures} for k in ks}
             for a in arms}
    low = [k for k in ks if k in LOW_KS] or [min(ks)]
    scratch = max(scratch_arms, key=lambda a: np.mean([final[a][k][s][0] for k in low for s in structures]))
    half = max((i for i, e in enumerate(epochs) if e <= epochs[-1] / 2), default=0)
    differences, verdicts = {}, {}
    for a in (a for a in arms if a not in scratch_arms):
        differences[a] = {s: {} for s in structures}
        for s in structures:
            for k in ks:
                mine, theirs = by_seed[(a, k, s, epochs[-1])], by_seed[(scratch, k, s, epochs[-1])]
                seeds = sorted(set(mine) & set(theirs))
                differences[a][s][k] = paired_difference([mine[i] for i in seeds], [theirs[i] for i in seeds])
        verdicts[a] = _verdicts(differences[a], steps[a], final[scratch], low, half)
    second = {m: {a: {k: _mean_sd(by_seed[(a, k, m, epochs[-1])]) for k in ks} for a in arms} for m in second_metrics}
    return {"ks": ks, "epochs": epochs, "final": final, "steps": steps, "scratch": scratch,
            "paired_differences": differences, "verdicts": verdicts, "second_metrics": second}


def summarize(records: list[dict], arms: list[str], scratch_arms: list[str], structures: list[str],
              second_metrics: list[str]) -> dict:
    """``summarize_budget`` for every budget in ``records``: {budget: summary}."""
    budgets = sorted({r["budget"] for r in records})
    return {b: summarize_budget([r for r in records if r["budget"] == b], arms, scratch_arms, structures,
                                second_metrics) for b in budgets}


def choose_recipe(summary: dict) -> dict:
    """The development phase's choice at ``CHOICE_BUDGET``: the arm with the highest score among those that do
    no harm (``recipe``; None when none does), and the highest-scoring arm regardless (``best_any``)."""
    verdicts = summary[CHOICE_BUDGET]["verdicts"]
    ranked = sorted(verdicts, key=lambda a: verdicts[a]["score"], reverse=True)
    safe = [a for a in ranked if verdicts[a]["do_no_harm"]]
    return {"recipe": safe[0] if safe else None, "best_any": ranked[0] if ranked else None, "ranking": ranked}


def markdown_tables(summary: dict, iterations: int) -> str:
    """Per budget: final Dice, Dice vs steps, paired differences and verdicts, as markdown tables."""
    lines: list[str] = []
    for budget, sb in summary.items():
        arms, ks = list(sb["final"]), sb["ks"]
        structures = list(sb["final"][arms[0]][ks[0]])
        steps = [e * iterations for e in sb["epochs"]]
        header = ["| arm | " + " | ".join(f"k={k} {s}" for k in ks for s in structures) + " |",
                  "|---|" + "---|" * len(ks) * len(structures)]
        lines += [f"### Budget x{budget} ({steps[-1]} fine-tuning steps); scratch = {sb['scratch']}", "",
                  "Final Dice, mean ± sd over seeds:", "", *header]
        for a in arms:
            cells = [f"{sb['final'][a][k][s][0]:.3f} ± {sb['final'][a][k][s][1]:.3f}" for k in ks for s in structures]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", "Dice (mean over seeds) after " + ", ".join(map(str, steps)) + " steps:", "", *header]
        for a in arms:
            cells = [" / ".join(f"{v:.3f}" for v in sb["steps"][a][k][s]) for k in ks for s in structures]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", f"Paired difference arm - {sb['scratch']} (final Dice, mean [{CONFIDENCE:.0%} interval]) and "
                  "verdicts:", "", "| arm | " + " | ".join(f"k={k} {s}" for k in ks for s in structures)
                  + " | score | no harm | gain | faster |", "|---|" + "---|" * (len(ks) * len(structures) + 4)]
        for a, per_s in sb["paired_differences"].items():
            cells = [f"{per_s[s][k]['mean']:+.3f} [{per_s[s][k]['low']:+.3f}, {per_s[s][k]['high']:+.3f}]"
                     for k in ks for s in structures]
            v = sb["verdicts"][a]
            cells += [f"{v['score']:+.3f}", str(v["do_no_harm"]), str(v["gain"]), str(v["convergence"])]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        metrics = list(sb["second_metrics"])
        lines += ["", "Beside Dice, at the end (mean ± sd over seeds):", "",
                  "| arm | " + " | ".join(f"k={k} {m}" for k in ks for m in metrics) + " |",
                  "|---|" + "---|" * len(ks) * len(metrics)]
        for a in arms:
            cells = [f"{sb['second_metrics'][m][a][k][0]:.3f} ± {sb['second_metrics'][m][a][k][1]:.3f}"
                     for k in ks for m in metrics]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, out: str, iterations: int) -> list[str]:
    """dice_vs_steps.png: Dice vs fine-tuning steps per k and structure, one line per arm and budget
    (budget x1 solid, x4 dashed); returns the files written."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(summary.values()))
    ks, arms = first["ks"], list(first["final"])
    structures = list(first["final"][arms[0]][ks[0]])
    fig, axes = plt.subplots(len(ks), len(structures), figsize=(5.5 * len(structures), 3.6 * len(ks)), squeeze=False)
    colours = {a: f"C{i % 10}" for i, a in enumerate(arms)}
    for budget, sb in summary.items():
        steps = [e * iterations for e in sb["epochs"]]
        for row, k in zip(axes, ks):
            for ax, s in zip(row, structures):
                for a in sb["final"]:
                    ax.plot(steps, sb["steps"][a][k][s], marker="o", ms=3, color=colours.get(a, "k"),
                            linestyle="-" if budget == min(summary) else "--",
                            label=a if budget == min(summary) else None)
                ax.set(xlabel="fine-tuning steps", ylabel="Dice (held-out)", title=f"k={k}, {s}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "dice_vs_steps.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
