"""report.md sections of issue 17's studies: every algorithm against local training, DPMN's byte saving
decomposed, accuracy at equal bytes, the density sweep, the data-scarcity and label-skew sweeps, and where (if
anywhere) DPMN beat local training. Numbers come from `analysis`; figures from `plots_studies`."""

from __future__ import annotations

import math
from pathlib import Path

from fedge.reproduce import analysis
from fedge.reproduce import plots_studies as figures
from fedge.reproduce.results import Record, algorithms_in, mean_sd, paired, select

LOCAL_RULE = ("Difference = accuracy − local's accuracy in percentage points, paired by seed (same data split and "
              "initial model), mean ± sd over seeds. *above / below local* when |mean| exceeds the sd of the "
              "per-seed differences; otherwise *not established* (also with one seed).")


def pm(values: list[float], scale: float = 1.0, digits: int = 1, sign: bool = False) -> str:
    mean, sd = mean_sd(v * scale for v in values)
    if math.isnan(mean):
        return "—"
    return f"{mean:+.{digits}f} ± {sd:.{digits}f}" if sign else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def local_rows(main: list[Record]) -> list[list[str]]:
    """Main setting: each algorithm's accuracy and its paired difference from local, with the verdict."""
    local = select(main, algorithm="local")
    rows = []
    for name in algorithms_in(main):
        if name == "local":
            continue
        diffs = analysis.versus_local(select(main, algorithm=name), local)
        rows.append([name, pm([r.accuracy for r in select(main, algorithm=name)], 100), pm(diffs, sign=True),
                     analysis.local_verdict(diffs)])
    return rows


def _avg(parts: analysis.Decomposition, label: str, name: str, scale: float = 1.0) -> str:
    return f"{mean_sd(getattr(r, name) * scale for r in parts.groups.get(label, []))[0]:.2f}"


def _decomposition(parts: analysis.Decomposition, base_density: float, figure: Path | None) -> list[str]:
    rounds = parts.groups["dpmn"][0].rounds
    share = [v for v in parts.pruning_share if not math.isnan(v)]
    text = (f"DPMN sent **{pm(parts.total, 100)}%** less than DFL after {rounds} rounds ({len(parts.seeds)} "
            f"seed(s)). Split multiplicatively, 1 − saving = (1 − pruning part) × (1 − neighbour part): the "
            f"**pruning part** (DPMN at target density {base_density:g} against DPMN with dense models, the same "
            f"neighbour rule) is **{pm(parts.pruning, 100)}%**, the **neighbour part** (dense DPMN against DFL, "
            f"both sending whole models: fewer neighbours, plus the probes and requests of selection) is "
            f"**{pm(parts.neighbours, 100)}%** (dense DPMN kept {_avg(parts, 'dpmn dense', 'neighbours_rounds')} "
            f"neighbours per device averaged over the rounds, DFL {_avg(parts, 'dfl', 'neighbours_rounds')}; dense "
            f"DPMN's probes and requests: {_avg(parts, 'dpmn dense', 'handshake_bytes', 1e-6)} MB); on a log scale "
            f"pruning accounts for {pm(share, 100)}% of the saving.")
    if parts.dpmp_pruning:
        text += (f" Second path through DPMP (DPMN's pruning on DFL's fixed random regular graph): pruning alone saves "
                 f"{pm(parts.dpmp_pruning, 100)}% of DFL's bytes, and DPMN's neighbour selection at equal pruning "
                 f"saves {pm(parts.dpmp_selection, 100)}% of DPMP's.")
    text += (" The paper's 45.4% is therefore to be read against these parts: the pruning part is set by the "
             "configured target density, the neighbour part by how many neighbours DPMN's rule keeps.")
    dfl = parts.groups["dfl"]
    rows = []
    for label, what in (("dfl", "fixed graph, dense"), ("dpmn dense", "DPMN's neighbours, target density 1"),
                        ("dpmp", "fixed graph, pruned"), ("dpmn", f"DPMN's neighbours, target density "
                                                                  f"{base_density:g}")):
        group = parts.groups.get(label) or []
        if not group:
            continue
        saving = [1 - a.bytes_total / b.bytes_total for a, b in paired(group, dfl) if b.bytes_total > 0]
        rows.append([label, what, pm([r.accuracy for r in group], 100), pm([r.mb for r in group]),
                     pm([r.handshake_bytes / 1e6 for r in group], digits=2),
                     pm([r.neighbours_rounds for r in group], digits=2), pm([r.density for r in group], digits=2),
                     "—" if label == "dfl" else pm(saving, 100) + "%"])
    out = ["## DPMN's byte saving decomposed", "", text, "",
           table(["run", "models and neighbours", "accuracy %", "total MB", "of which probes + requests MB",
                  "neighbours (mean over rounds)", "final density", "saving vs dfl"], rows), ""]
    return out + ([f"![byte saving decomposed]({figure.name})", ""] if figure else [])


def _equal_bytes(main: list[Record]) -> list[str]:
    rows = []
    for row in analysis.equal_bytes(main):
        if not row.budget_mb:
            rows.append([row.algorithm, "—", "—", "—", "—", "—", f"no round within the budget ({row.skipped} "
                         f"seed(s))"])
            continue
        diffs = [100 * d for d in row.differences]
        verdict = analysis.local_verdict(diffs).replace("local", "dfl")
        rows.append([row.algorithm, pm(row.budget_mb), pm([float(r) for r in row.rounds]),
                     pm(row.accuracy, 100), pm([float(r) for r in row.reference_rounds]),
                     pm(row.reference_accuracy, 100), f"{pm(diffs, sign=True)} ({verdict})"])
    if not rows:
        return []
    return ["## Accuracy at equal bytes", "",
            "Each algorithm against DFL when both have sent the smaller of their two totals: the accuracy of the "
            "last evaluated round whose cumulative traffic is within that budget (per seed, from the per-round "
            "curves; the same as running the costlier one for fewer rounds, since nothing in these runs depends "
            "on the total number of rounds — tested). Difference = algorithm − DFL in points; *above/below dfl* "
            "when |mean| exceeds the sd of the per-seed differences.", "",
            table(["algorithm", "budget MB", "its rounds", "its accuracy %", "dfl rounds", "dfl accuracy %",
                   "difference"], rows), ""]


def _density(records: list[Record], figure: Path | None) -> list[str]:
    dpmn = select(records, study="density", algorithm="dpmn")
    dfl = select(records, study="density", algorithm="dfl")
    rows = []
    for d in sorted({r.target_density for r in dpmn}):
        group = select(dpmn, density=d)
        saving = [1 - a.bytes_total / b.bytes_total for a, b in paired(group, dfl) if b.bytes_total > 0]
        local = select(records, study="main", algorithm="local")
        rows.append([f"{d:g}", pm([r.accuracy for r in group], 100), pm([r.mb for r in group]),
                     pm([r.density for r in group], digits=2), pm([r.neighbours for r in group], digits=2),
                     pm(saving, 100) + "%" if saving else "—",
                     pm(analysis.versus_local(group, local), sign=True) if local else "—"])
    if not rows:
        return []
    out = ["## Density sweep (DPMN, pruning.target_density)", "",
           "Measured density is the mean kept fraction of weights after the last round (biases stay dense, and the "
           "adaptive schedule may stop above the target).", "",
           table(["target density", "accuracy %", "total MB", "measured density", "neighbours", "saving vs dfl",
                  "− local (points)"], rows), ""]
    return out + ([f"![density sweep]({figure.name})", ""] if figure else [])


def _sweep(points: list[analysis.SweepPoint], study: str, figure: Path | None) -> list[str]:
    if not points:
        return []
    names = [n for n in dict.fromkeys(n for p in points for n in p.records) if n != "local"]
    columns = ["setting", "train samples", "classes", "local %"]
    for name in names:
        columns += [f"{name} %", f"{name} − local", "verdict"]
    rows = []
    for p in points:
        recs = [r for group in p.records.values() for r in group]
        row = [p.label, pm([r.train_samples for r in recs], digits=0), pm([r.classes for r in recs], digits=1),
               pm([r.accuracy for r in p.records.get("local", [])], 100)]
        for name in names:
            diffs = p.versus_local.get(name, [])
            row += [pm([r.accuracy for r in p.records.get(name, [])], 100), pm(diffs, sign=True),
                    analysis.local_verdict(diffs)]
        rows.append(row)
    title = ("## Data scarcity (data.train_per_device: training samples per device)" if study == "scarcity" else
             "## Label skew (data.partition)")
    out = [title, "", "train samples and classes: mean per device, as loaded.", "", table(columns, rows), ""]
    return out + ([f"![{study} sweep]({figure.name})", ""] if figure else [])


def _finding(points: dict[str, list[analysis.SweepPoint]], main: list[Record]) -> list[str]:
    main_diffs = analysis.versus_local(select(main, algorithm="dpmn"), select(main, algorithm="local"))
    if not main_diffs and not any(points.values()):
        return []
    beats = analysis.where_beats_local(points)
    if analysis.local_verdict(main_diffs) == analysis.ABOVE:
        beats.insert(0, "main setting")
    tried = ["main setting"] + [f"{s}: {p.label}" for s, ps in points.items() for p in ps]
    open_ = [f"{s}: {p.label}" for s, ps in points.items() for p in ps
             if analysis.local_verdict(p.versus_local.get("dpmn", [])).startswith(analysis.OPEN)]
    if beats:
        text = f"DPMN was more accurate than local training, outside the seed spread, at: {'; '.join(beats)}."
    else:
        text = (f"**No regime found**: in none of the settings of this run ({'; '.join(tried)}) was DPMN more "
                f"accurate than local training outside the seed spread.")
    if open_:
        text += f" Not established (difference within the spread): {'; '.join(open_)}."
    others = [f"{name} at main setting" for name in algorithms_in(main) if name not in ("dpmn", "local")
              and analysis.local_verdict(analysis.versus_local(select(main, algorithm=name),
                                                               select(main, algorithm="local"))) == analysis.ABOVE]
    others += [f"{name} at {s}: {p.label}" for s, ps in points.items() for p in ps for name, diffs
               in p.versus_local.items() if name != "dpmn" and analysis.local_verdict(diffs) == analysis.ABOVE]
    text += (f" Other algorithms above local outside the spread: {'; '.join(others)}." if others else
             " No other algorithm of this run was above local outside the spread either.")
    return ["## Where does DPMN beat local training?", "", text, ""]


def render_studies(records: list[Record], base_density: float, folder: Path | None, subtitle: str) -> list[str]:
    """The report lines of every issue-17 study the records contain (drawing its figures into `folder`; none
    when it is None)."""
    main = select(records, study="main")
    out: list[str] = []
    rows = local_rows(main)
    if rows and select(main, algorithm="local"):
        out += ["## Against local training (main setting)", "", LOCAL_RULE, "",
                table(["algorithm", "accuracy %", "− local (points)", "verdict"], rows), ""]
    parts = analysis.decompose(records, base_density)
    if parts is not None:
        out += _decomposition(parts, base_density, figures.decomposition(parts, folder, subtitle) if folder else None)
    if select(records, study="decompose"):
        out += _equal_bytes(main)
    if select(records, study="density"):
        out += _density(records, figures.density(records, folder, subtitle) if folder else None)
    points = {s: analysis.sweep(records, s) for s in ("scarcity", "skew") if select(records, study=s)}
    for study, pts in points.items():
        out += _sweep(pts, study, figures.sweep(pts, study, folder, subtitle) if folder else None)
    if points:
        out += _finding(points, main)
    return out
