"""The report's figures, drawn with Matplotlib's Agg backend (no display needed). Lines are seed means; shaded
bands and error bars are ± one standard deviation across seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedge.reproduce.results import Record, algorithms_in, mean_sd, select  # noqa: E402

FIGURES = {
    "round": "accuracy_vs_round.png",
    "mb": "accuracy_vs_mb.png",
    "delta": "delta_study.png",
    "devices": "accuracy_vs_devices.png",
}


def _mean_curve(group: list[Record]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per-round mean accuracy (%), its sd, and mean cumulative MB, over rounds evaluated in every seed."""
    rounds = sorted(set.intersection(*[{r for r, a, _ in rec.curve if a is not None} for rec in group]))
    acc, sd, mb = [], [], []
    for rnd in rounds:
        values = [next(a for r, a, _ in rec.curve if r == rnd) for rec in group]
        m, s = mean_sd(100 * v for v in values)
        acc.append(m)
        sd.append(s)
        mb.append(mean_sd(next(b for r, _, b in rec.curve if r == rnd) / 1e6 for rec in group)[0])
    return rounds, acc, sd, mb


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, path: Path) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(records: list[Record], folder: Path, subtitle: str) -> list[Path]:
    """Accuracy against round and against cumulative MB sent, one line per algorithm (the main setting)."""
    main = select(records, study="main")
    paths = [folder / FIGURES["round"], folder / FIGURES["mb"]]
    fig_r, ax_r = plt.subplots(figsize=(6.4, 4.2))
    fig_m, ax_m = plt.subplots(figsize=(6.4, 4.2))
    for name in algorithms_in(main):
        group = select(main, algorithm=name)
        rounds, acc, sd, mb = _mean_curve(group)
        if not rounds:
            continue
        line = ax_r.plot(rounds, acc, marker=".", label=name)[0]
        ax_r.fill_between(rounds, [a - s for a, s in zip(acc, sd)], [a + s for a, s in zip(acc, sd)],
                          color=line.get_color(), alpha=0.15)
        label = f"{name} (0 MB: no exchange)" if mb and mb[-1] == 0 else name
        ax_m.plot(mb, acc, marker=".", label=label, color=line.get_color())
    ax_r.set_xlabel("communication round")
    ax_r.set_ylabel("mean personalized test accuracy (%)")
    ax_r.legend(fontsize=8)
    _finish(fig_r, ax_r, f"Accuracy per round — {subtitle}", paths[0])
    ax_m.set_xlabel("cumulative traffic, all devices (MB)")
    ax_m.set_ylabel("mean personalized test accuracy (%)")
    ax_m.legend(fontsize=8)
    _finish(fig_m, ax_m, f"Accuracy against traffic — {subtitle}", paths[1])
    return paths


def accuracy_traffic_axes(xs: list[float], groups: list[list[Record]],
                          label: str = "") -> tuple[plt.Figure, plt.Axes, plt.Axes]:
    """A figure of accuracy (left axis) and total traffic (right axis, dashed) against `xs`, each point the seed mean
    ± sd of its group of runs."""
    acc = [mean_sd(100 * r.accuracy for r in group) for group in groups]
    mb = [mean_sd(r.mb for r in group) for group in groups]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar(xs, [m for m, _ in acc], yerr=[s for _, s in acc], color="tab:blue", marker="o", capsize=3,
                label=f"{label}accuracy (left)")
    twin = ax.twinx()
    twin.errorbar(xs, [m for m, _ in mb], yerr=[s for _, s in mb], color="tab:orange", marker="s", capsize=3,
                  linestyle="--", label=f"{label}traffic (right)")
    ax.set_xticks(xs)
    return fig, ax, twin


def finish_accuracy_traffic(fig: plt.Figure, ax: plt.Axes, twin: plt.Axes, xlabel: str, title: str,
                            path: Path) -> Path:
    """Axis labels, one legend for both axes, and the file."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean personalized test accuracy (%)", color="tab:blue")
    twin.set_ylabel("total traffic (MB)", color="tab:orange")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="best")
    _finish(fig, ax, title, path)
    return path


def delta_study(records: list[Record], devices: int, folder: Path, subtitle: str) -> Path | None:
    """The paper's Fig. 4: DPMN's accuracy (left axis) and total traffic (right axis) against δ."""
    dpmn = select(records, study="delta", algorithm="dpmn", devices=devices)
    deltas = sorted({r.delta for r in dpmn})
    if not deltas:
        return None
    fig, ax, twin = accuracy_traffic_axes(deltas, [select(dpmn, delta=d) for d in deltas])
    return finish_accuracy_traffic(fig, ax, twin, "cosine-similarity threshold δ",
                                   f"DPMN: effect of δ — {devices} devices, {subtitle}", folder / FIGURES["delta"])


def devices_study(records: list[Record], folder: Path, subtitle: str) -> Path | None:
    """The paper's Fig. 5: final accuracy against the number of devices, one line per algorithm."""
    study = select(records, study="devices")
    if not study:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    counts = sorted({r.devices for r in study})
    for name in algorithms_in(study):
        points = [(n, mean_sd(100 * r.accuracy for r in select(study, algorithm=name, devices=n)))
                  for n in counts if select(study, algorithm=name, devices=n)]
        ax.errorbar([n for n, _ in points], [m for _, (m, _) in points], yerr=[s for _, (_, s) in points],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xticks(counts)
    ax.set_xticklabels([str(n) for n in counts])
    ax.minorticks_off()
    ax.set_xlabel("number of devices N")
    ax.set_ylabel("mean personalized test accuracy (%)")
    ax.legend(fontsize=8)
    path = folder / FIGURES["devices"]
    _finish(fig, ax, f"Accuracy against number of devices — {subtitle}", path)
    return path
