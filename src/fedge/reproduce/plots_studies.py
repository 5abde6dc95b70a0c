"""Figures of issue 17's studies (Matplotlib, Agg): the byte-saving decomposition, the density sweep, and the
data-scarcity and label-skew sweeps against local training. Points are seed means; bars ± one sd across seeds."""

from __future__ import annotations

from pathlib import Path

from fedge.reproduce.analysis import Decomposition, SweepPoint
from fedge.reproduce.plots import _finish, accuracy_traffic_axes, finish_accuracy_traffic, plt
from fedge.reproduce.results import Record, mean_sd, select

STUDY_FIGURES = {
    "decompose": "byte_decomposition.png",
    "density": "density_sweep.png",
    "scarcity": "scarcity_sweep.png",
    "skew": "skew_sweep.png",
}


def decomposition(parts: Decomposition, folder: Path, subtitle: str) -> Path:
    """Total MB of DFL, DPMN with dense models, DPMP and DPMN, with each bar's accuracy written above it."""
    labels = [k for k in ("dfl", "dpmn dense", "dpmp", "dpmn") if parts.groups.get(k)]
    mb = [mean_sd(r.mb for r in parts.groups[k]) for k in labels]
    acc = [mean_sd(100 * r.accuracy for r in parts.groups[k])[0] for k in labels]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bars = ax.bar(labels, [m for m, _ in mb], yerr=[s for _, s in mb], capsize=3,
                  color=["tab:gray", "tab:cyan", "tab:olive", "tab:blue"][:len(labels)])
    for bar, a, (m, sd) in zip(bars, acc, mb):
        ax.annotate(f"acc. {a:.1f}%", (bar.get_x() + bar.get_width() / 2, m + sd), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    total, prune, nbr = (100 * mean_sd(v)[0] for v in (parts.total, parts.pruning, parts.neighbours))
    ax.set_ylabel("total traffic after the last round (MB)")
    ax.set_xlabel(f"saving {total:.1f}%: pruning part {prune:.1f}%, neighbour part {nbr:.1f}% (multiplicative)")
    path = folder / STUDY_FIGURES["decompose"]
    _finish(fig, ax, f"DPMN's saving over DFL, decomposed — {subtitle}", path)
    return path


def density(records: list[Record], folder: Path, subtitle: str) -> Path | None:
    """DPMN's accuracy (left) and traffic (right) against its target density, DFL's as dotted reference lines."""
    dpmn = select(records, study="density", algorithm="dpmn")
    grid = sorted({r.target_density for r in dpmn})
    if not grid:
        return None
    fig, ax, twin = accuracy_traffic_axes(grid, [select(dpmn, density=d) for d in grid], label="dpmn ")
    dfl = select(records, study="density", algorithm="dfl")
    if dfl:
        ax.axhline(mean_sd(100 * r.accuracy for r in dfl)[0], color="tab:blue", linestyle=":", alpha=0.6,
                   label="dfl accuracy")
        twin.axhline(mean_sd(r.mb for r in dfl)[0], color="tab:orange", linestyle=":", alpha=0.6,
                     label="dfl traffic")
    return finish_accuracy_traffic(fig, ax, twin, "pruning.target_density (fraction of weights kept)",
                                   f"DPMN: accuracy and traffic against density — {subtitle}",
                                   folder / STUDY_FIGURES["density"])


def sweep(points: list[SweepPoint], study: str, folder: Path, subtitle: str) -> Path | None:
    """Final accuracy of each algorithm at each point of a sweep (categorical x axis), local in black."""
    if not points:
        return None
    names = list(dict.fromkeys(name for p in points for name in p.records))
    xs = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in names:
        stats = [(x, p.stat(name, lambda r: 100 * r.accuracy)) for x, p in zip(xs, points) if p.records.get(name)]
        style = {"color": "black", "linestyle": "--"} if name == "local" else {}
        ax.errorbar([x for x, _ in stats], [m for _, (m, _) in stats], yerr=[s for _, (_, s) in stats],
                    marker="o", capsize=3, label=name, **style)
    ax.set_xticks(xs)
    ax.set_xticklabels([p.label for p in points], fontsize=8)
    ax.set_xlabel("training samples per device" if study == "scarcity" else "partition (label skew)")
    ax.set_ylabel("mean personalized test accuracy (%)")
    ax.legend(fontsize=8)
    path = folder / STUDY_FIGURES[study]
    what = "data scarcity" if study == "scarcity" else "label skew"
    _finish(fig, ax, f"Against local training: {what} — {subtitle}", path)
    return path
