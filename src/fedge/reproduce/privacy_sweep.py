"""Accuracy against ε: train one algorithm at several privacy budgets and seeds, write a table and a plot.

For each ε the run calibrates σ so that ε is reached after the planned rounds (`privacy.calibrate`); ε = ∞ is the
run without DP. The quality metric is the final `accuracy_mean` (`fedge run`) or `test_hr@10` (`fedge recsys`: the
test HR@10 of the round validation chose), reported as mean ± standard deviation over the seeds, next to the σ used
and the ε the accountant reports. A run that diverges (the DP noise overwhelms the model) is recorded as diverged,
with its reason, and contributes no number. Writes `sweep.json` (every run), `sweep.csv`, `sweep.md` (the table) and
`accuracy_vs_epsilon.png` into the output folder.
"""

from __future__ import annotations

import copy
import json
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
from fedge.runfolder import Diverged, environment  # noqa: E402


@dataclass
class SweepRun:
    epsilon: float  # the target (inf: no DP)
    seed: int
    quality: float | None  # final accuracy / HR@10
    achieved_epsilon: float | None  # what the accountant reports
    noise_multiplier: float | None
    seconds: float
    diverged: str | None = None  # the `Diverged` message when the run stopped on a non-finite loss or model


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
            try:
                summary = run_one(variant)
            except Diverged as error:
                runs.append(SweepRun(epsilon, seed, None, None, None, 0.0, str(error)))
                if on_run:
                    on_run(runs[-1])
                continue
            privacy = summary.get("privacy") or summary  # fedge run nests its privacy block; recsys does not
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
        diverged = sum(r.diverged is not None for r in group)
        quality = f"{mean:.4f} ± {sd:.4f}" if values else "—"
        if diverged:
            quality += f" ({diverged} of {len(group)} diverged)"
        rows.append([_label(epsilon), quality,
                     f"{statistics.fmean(sigmas):.3f}" if sigmas else "0",
                     f"{max(achieved):.3f}" if achieved else "—", str(len(group))])
    return rows


def write(out: Path, runs: list[SweepRun], quality_name: str, title: str, command: str) -> str:
    """Write sweep.json/csv/md and the plot; returns the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {"command": command, "environment": environment(), "quality": quality_name,
                                           "title": title,
                                           "runs": [vars(r) | {"epsilon": None if math.isinf(r.epsilon) else
                                                               r.epsilon} for r in runs]})
    lines = ["epsilon,seed,quality,achieved_epsilon,noise_multiplier,seconds,diverged"]
    for r in runs:
        lines.append(",".join(str(v) for v in (r.epsilon, r.seed, r.quality, r.achieved_epsilon,
                                                r.noise_multiplier, round(r.seconds, 2), r.diverged is not None)))
    atomic_write_bytes(out / "sweep.csv", ("\n".join(lines) + "\n").encode())
    header = f"| ε (target) | {quality_name} (mean ± sd) | σ | ε reached | seeds |\n|---|---:|---:|---:|---:|\n"
    markdown = header + "".join(f"| {' | '.join(row)} |\n" for row in table(runs, quality_name))
    atomic_write_bytes(out / "sweep.md", (f"# {title}\n\nCommand: `{command}`\n\n" + markdown).encode())
    _plot(out / "accuracy_vs_epsilon.png", runs, quality_name, title)
    return markdown


def _epsilon_axis(ax: Any, epsilons: list[float]) -> None:
    """A log ε axis labelled at the ε values swept (1, 2, 4, 8), not at powers of ten."""
    ax.set_xscale("log")
    if epsilons:
        ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
        ax.minorticks_off()


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
    _epsilon_axis(ax, finite)
    ax.set_xlabel("ε (δ fixed)")
    ax.set_ylabel(quality_name)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def combine(folders: list[Path], path: Path) -> None:
    """One plot of several finished sweeps (their `sweep.json`), quality mean ± sd against ε, one line per sweep
    labelled by its title; the ε = ∞ means as dotted lines of the same colour."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    swept: set[float] = set()
    for folder in folders:
        data = json.loads((folder / "sweep.json").read_text())
        runs = [SweepRun(math.inf if r["epsilon"] is None else r["epsilon"], r["seed"], r["quality"],
                         r["achieved_epsilon"], r["noise_multiplier"], r["seconds"], r.get("diverged"))
                for r in data["runs"]]
        finite = sorted({r.epsilon for r in runs if not math.isinf(r.epsilon)})
        swept.update(finite)
        points = [(e, [r.quality for r in runs if r.epsilon == e and r.quality is not None]) for e in finite]
        points = [(e, v) for e, v in points if v]
        label = data.get("title") or folder.name
        line = ax.errorbar([e for e, _ in points], [statistics.fmean(v) for _, v in points],
                           yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points],
                           marker="o", capsize=3, label=label)
        reference = [r.quality for r in runs if math.isinf(r.epsilon) and r.quality is not None]
        if reference:
            ax.axhline(statistics.fmean(reference), color=line.lines[0].get_color(), linestyle=":", linewidth=1)
    _epsilon_axis(ax, sorted(swept))
    ax.set_xlabel("ε (δ fixed; dotted: the same without DP)")
    ax.set_ylabel(data["quality"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["SweepRun", "combine", "run_sweep", "table", "write"]
