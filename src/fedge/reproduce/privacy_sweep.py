"""Accuracy against ε: train one algorithm at several privacy budgets and seeds, write a table and a plot.

For each ε the run calibrates σ so that ε is reached after the planned rounds (`privacy.calibrate`); ε = ∞ is the
run without DP. The quality metric is the final `accuracy_mean` (`fedge run`) or `hr@10` (`fedge recsys`), reported
as mean ± standard deviation over the seeds, next to the σ used and the ε the accountant reports. Writes
`sweep.json` (every run), `sweep.csv`, `sweep.md` (the table) and `accuracy_vs_epsilon.png` into the output folder.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedge.output import atomic_write_bytes, atomic_write_json  # noqa: E402
from fedge.runfolder import environment  # noqa: E402


@dataclass
class SweepRun:
    epsilon: float  # the target (inf: no DP)
    seed: int
    quality: float | None  # final accuracy / HR@10
    achieved_epsilon: float | None  # what the accountant reports
    noise_multiplier: float | None
    seconds: float


def run_sweep(config: Any, epsilons: list[float], seeds: list[int], mechanism: str,
              run_one: Callable[[Any], dict[str, Any]], quality_key: str,
              on_run: Callable[[SweepRun], None] | None = None) -> list[SweepRun]:
    """Run `run_one(config variant) -> summary` for every (ε, seed); variants differ only in seed and privacy."""
    runs = []
    for epsilon in epsilons:
        for seed in seeds:
            variant = copy.deepcopy(config)
            variant.seed = seed
            if math.isinf(epsilon):
                variant.privacy.mechanism = "none"
            else:
                variant.privacy.mechanism, variant.privacy.calibrate = mechanism, True
                variant.privacy.target_epsilon = epsilon
            summary = run_one(variant)
            privacy = summary.get("privacy") or {}
            quality = summary.get(quality_key)
            runs.append(SweepRun(epsilon, seed, float(quality) if isinstance(quality, (int, float)) else None,
                                 privacy.get("epsilon"), privacy.get("noise_multiplier"),
                                 float(summary.get("seconds", summary.get("mean_round_s", 0.0)))))
            if on_run:
                on_run(runs[-1])
    return runs


def _label(epsilon: float) -> str:
    return "∞ (no DP)" if math.isinf(epsilon) else f"{epsilon:g}"


def table(runs: list[SweepRun], quality_name: str) -> list[list[str]]:
    """Rows: ε, quality mean ± sd (over seeds with a number), σ, achieved ε, seeds."""
    rows = []
    for epsilon in sorted({r.epsilon for r in runs}, key=lambda e: -e):
        group = [r for r in runs if r.epsilon == epsilon]
        values = [r.quality for r in group if r.quality is not None]
        mean = statistics.fmean(values) if values else math.nan
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        sigmas = [r.noise_multiplier for r in group if r.noise_multiplier is not None]
        achieved = [r.achieved_epsilon for r in group if r.achieved_epsilon is not None]
        rows.append([_label(epsilon), f"{mean:.4f} ± {sd:.4f}" if values else "—",
                     f"{statistics.fmean(sigmas):.3f}" if sigmas else "0",
                     f"{max(achieved):.3f}" if achieved else "—", str(len(group))])
    return rows


def write(out: Path, runs: list[SweepRun], quality_name: str, title: str, command: str) -> str:
    """Write sweep.json/csv/md and the plot; returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {"command": command, "environment": environment(), "quality": quality_name,
                                           "runs": [vars(r) | {"epsilon": None if math.isinf(r.epsilon) else
                                                               r.epsilon} for r in runs]})
    lines = ["epsilon,seed,quality,achieved_epsilon,noise_multiplier,seconds"]
    for r in runs:
        lines.append(",".join(str(v) for v in (r.epsilon, r.seed, r.quality, r.achieved_epsilon,
                                                r.noise_multiplier, round(r.seconds, 2))))
    atomic_write_bytes(out / "sweep.csv", ("\n".join(lines) + "\n").encode())
    header = f"| ε (target) | {quality_name} (mean ± sd) | σ | ε reached | seeds |\n|---|---:|---:|---:|---:|\n"
    markdown = header + "".join(f"| {' | '.join(row)} |\n" for row in table(runs, quality_name))
    atomic_write_bytes(out / "sweep.md", (f"# {title}\n\nCommand: `{command}`\n\n" + markdown).encode())
    _plot(out / "accuracy_vs_epsilon.png", runs, quality_name, title)
    return markdown


def _plot(path: Path, runs: list[SweepRun], quality_name: str, title: str) -> None:
    finite = sorted({r.epsilon for r in runs if not math.isinf(r.epsilon)})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs, means, sds = [], [], []
    for epsilon in finite:
        values = [r.quality for r in runs if r.epsilon == epsilon and r.quality is not None]
        if values:
            xs.append(epsilon)
            means.append(statistics.fmean(values))
            sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    if xs:
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label="with DP")
    reference = [r.quality for r in runs if math.isinf(r.epsilon) and r.quality is not None]
    if reference:
        ax.axhline(statistics.fmean(reference), color="grey", linestyle="--", label="no DP (ε = ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("ε (δ fixed)")
    ax.set_ylabel(quality_name)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["SweepRun", "run_sweep", "table", "write"]
