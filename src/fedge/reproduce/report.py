"""report.md: the verdict on each claim (from `verdicts`), the main table, the δ and device-count tables, figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fedge.output import atomic_write_bytes
from fedge.reproduce.plots import FIGURES
from fedge.reproduce.report_studies import render_studies
from fedge.reproduce.results import Record, algorithms_in, mean_sd, paired, select
from fedge.reproduce.verdicts import Rules, Verdict

TABLE_COLUMNS = ["algorithm", "accuracy %", "p10 accuracy %", "total MB", "MB to target", "saving vs dfl"]


@dataclass
class RunInfo:
    """How the results were produced, for the report's header."""

    command: str
    machine: str
    dataset: str
    model: str
    devices: int
    partition: str
    rounds: int
    seeds: int
    deltas: list[float]
    device_counts: list[int]
    cells: int
    cached: int
    wall_seconds: float
    target_density: float = 0.5  # the main setting's pruning.target_density
    studies: list[str] | None = None  # the studies run (None: the paper's three)


def _pm(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean, sd = mean_sd(v * scale for v in values)
    return "—" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def main_table(records: list[Record], target: float) -> list[list[str]]:
    """Rows of the main comparison: final accuracy, p10 accuracy, total MB, MB to reach `target`, saving vs dfl."""
    main = select(records, study="main")
    dfl = select(main, algorithm="dfl")
    rows = []
    for name in algorithms_in(main):
        group = select(main, algorithm=name)
        reached = [m for m in (r.mb_to_target(target) for r in group) if m is not None]
        if not reached:
            to_target = "not reached"
        else:
            to_target = _pm(reached) + ("" if len(reached) == len(group) else f" ({len(reached)}/{len(group)} seeds)")
        pairs = [(a, b) for a, b in paired(group, dfl) if b.bytes_total > 0]
        saving = "—" if not pairs or name == "dfl" else _pm([1 - a.bytes_total / b.bytes_total for a, b in pairs],
                                                             100) + "%"
        rows.append([name, _pm([r.accuracy for r in group], 100), _pm([r.accuracy_p10 for r in group], 100),
                     _pm([r.mb for r in group]), to_target, saving])
    return rows


def _markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _delta_rows(records: list[Record], devices: int) -> list[list[str]]:
    dpmn = select(records, study="delta", algorithm="dpmn", devices=devices)
    return [[f"{d:g}", _pm([r.accuracy for r in select(dpmn, delta=d)], 100),
             _pm([r.mb for r in select(dpmn, delta=d)]), _pm([r.neighbours for r in select(dpmn, delta=d)], 1, 2)]
            for d in sorted({r.delta for r in dpmn})]


def _device_rows(records: list[Record]) -> tuple[list[str], list[list[str]]]:
    study = select(records, study="devices")
    counts = sorted({r.devices for r in study})
    rows = [[name] + [_pm([r.accuracy for r in select(study, algorithm=name, devices=n)], 100) for n in counts]
            for name in algorithms_in(study)]
    return ["algorithm"] + [f"N = {n}" for n in counts], rows


def render(info: RunInfo, records: list[Record], verdicts: list[Verdict], rules: Rules, target: float,
           folder: Path | None = None) -> str:
    """report.md's text; issue 17's study figures are drawn into `folder` (none when it is None)."""
    studies = info.studies or ["main", "delta", "devices"]
    subtitle = (f"{info.dataset}, {info.model}, {info.partition}, {info.rounds} rounds, {info.seeds} seed(s); "
                f"mean ± standard deviation across seeds")
    out = [f"# Reproducing DPMN's claims (paper §IV) on {info.dataset}", "",
           f"Command: `{info.command}`  ",
           f"Machine: {info.machine}  ",
           f"Grid: {info.cells} cells, {info.cached} of them reused from the cache by the last invocation, which "
           f"took {info.wall_seconds:.0f} s wall time. All cells together used "
           f"{sum(r.cpu_seconds for r in records):.0f} CPU-seconds (one thread per cell).  ",
           f"Main setting: {info.devices} devices, {info.partition} partition, model {info.model}, "
           f"{info.rounds} rounds, δ = {rules.delta:g}, target density {info.target_density:g}, seeds "
           f"0…{info.seeds - 1}." + (f" δ study: DPMN at δ ∈ {{{', '.join(f'{d:g}' for d in info.deltas)}}}."
                                     if "delta" in studies else "")
           + (f" Device study: N ∈ {{{', '.join(str(n) for n in info.device_counts)}}}." if "devices" in studies
              else ""), "",
           f"Studies: {', '.join(studies)}. Every setting is the preset's default or the command's (DPMN's λ, σ, "
           f"δ are its shipped defaults, chosen on validation data on the 2-class digits default); nothing was "
           f"tuned for this report, on test or validation data.", "", "## Verdicts", ""]
    for v in verdicts:
        out += [f"**{v.title}: {v.status.upper()}.** {v.text}", "", f"*Rule:* {v.rule}", ""]
    out += [f"## Main comparison ({info.devices} devices, {info.rounds} rounds)", "",
            f"Accuracy is the mean personalized test accuracy over devices after the last round (p10: the 10th "
            f"percentile over devices); MB counts every payload sent by every device. Target accuracy for "
            f"'MB to target': {100 * target:.0f}% (95% of the lower of DPMN's and DFL's final accuracy, rounded "
            f"down, unless set with --target). {subtitle}.", "",
            _markdown_table(TABLE_COLUMNS, main_table(records, target)), "",
            f"![accuracy per round]({FIGURES['round']})", "", f"![accuracy against traffic]({FIGURES['mb']})", ""]
    delta_rows = _delta_rows(records, info.devices)
    if delta_rows:
        out += [f"## δ study (the paper's Fig. 4; DPMN, {info.devices} devices)", "",
                _markdown_table(["δ", "accuracy %", "total MB", "neighbours"], delta_rows), "",
                f"![delta study]({FIGURES['delta']})", ""]
    columns, rows = _device_rows(records)
    if rows:
        out += ["## Number of devices (the paper's Fig. 5; final accuracy %)", "", _markdown_table(columns, rows), "",
                f"![accuracy against number of devices]({FIGURES['devices']})", ""]
    out += render_studies(records, info.target_density, folder,
                          f"{info.dataset}, {info.devices} devices, {info.rounds} rounds")
    out += ["Per-cell numbers: `results.csv` (one row per cell and seed).", ""]
    return "\n".join(out)


def write_report(folder: Path, info: RunInfo, records: list[Record], verdicts: list[Verdict], rules: Rules,
                 target: float) -> Path:
    path = folder / "report.md"
    atomic_write_bytes(path, render(info, records, verdicts, rules, target, folder).encode())
    return path
