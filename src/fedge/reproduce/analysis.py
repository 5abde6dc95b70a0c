"""Numbers for issue 17's studies, computed from the records (pure functions; `report_studies` formats them).

* `decompose`: DPMN's saving over DFL, per seed, as the product of a pruning factor and a neighbour factor:
  B(dpmn) / B(dfl) = [B(dpmn) / B(dpmn, dense)] × [B(dpmn, dense) / B(dfl)], where "dense" is DPMN with
  `pruning.target_density = 1` (its own neighbour rule, nothing pruned). So 1 − saving = (1 − pruning saving) ×
  (1 − neighbour saving); the pruning share of the saving is ln(pruning factor) / ln(total factor). DPMP (DPMN's
  pruning on DFL's fixed graph) gives a second path: B(dpmp) / B(dfl) and B(dpmn) / B(dpmp).
* `equal_bytes`: each algorithm's and DFL's accuracy when their cumulative traffic reaches the smaller of their two
  totals (the last evaluated round within that budget), per seed.
* `versus_local`: paired accuracy differences from `local` with a verdict; "not established" when the mean
  difference is within one standard deviation of the per-seed differences (or there is one seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fedge.reproduce.results import Record, algorithms_in, by_seed, mean_sd, paired, select
from fedge.reproduce.studies import DENSE

ABOVE, BELOW, OPEN = "above local", "below local", "not established"


@dataclass
class Decomposition:
    """Per-seed fractions (0–1) of DPMN's byte saving, and the records they came from."""

    seeds: list[int]
    total: list[float]  # 1 − B(dpmn) / B(dfl)
    pruning: list[float]  # 1 − B(dpmn) / B(dpmn dense)
    neighbours: list[float]  # 1 − B(dpmn dense) / B(dfl)
    pruning_share: list[float]  # ln(B(dpmn) / B(dense)) / ln(B(dpmn) / B(dfl)); NaN when there is no saving
    dpmp_pruning: list[float] = field(default_factory=list)  # 1 − B(dpmp) / B(dfl)
    dpmp_selection: list[float] = field(default_factory=list)  # 1 − B(dpmn) / B(dpmp)
    groups: dict[str, list[Record]] = field(default_factory=dict)  # label -> records of the seeds used


def decompose(records: Iterable[Record], base_density: float) -> Decomposition | None:
    """The decomposition over the seeds where DPMN, dense DPMN and DFL all ran (DPMP's path where it ran too)."""
    study = select(records, study="decompose")
    groups = {"dfl": by_seed(select(study, algorithm="dfl")),
              "dpmn dense": by_seed(select(study, algorithm="dpmn", density=DENSE)),
              "dpmp": by_seed(select(study, algorithm="dpmp")),
              "dpmn": by_seed(select(study, algorithm="dpmn", density=base_density))}
    seeds = sorted(set(groups["dpmn"]) & set(groups["dpmn dense"]) & set(groups["dfl"]))
    seeds = [s for s in seeds if min(groups[k][s].bytes_total for k in ("dpmn", "dpmn dense", "dfl")) > 0]
    if not seeds:
        return None
    out = Decomposition(seeds, [], [], [], [])
    for s in seeds:
        dpmn, dense, dfl = (groups[k][s].bytes_total for k in ("dpmn", "dpmn dense", "dfl"))
        out.total.append(1 - dpmn / dfl)
        out.pruning.append(1 - dpmn / dense)
        out.neighbours.append(1 - dense / dfl)
        out.pruning_share.append(math.log(dpmn / dense) / math.log(dpmn / dfl) if dpmn < dfl else math.nan)
        if s in groups["dpmp"] and groups["dpmp"][s].bytes_total > 0:
            dpmp = groups["dpmp"][s].bytes_total
            out.dpmp_pruning.append(1 - dpmp / dfl)
            out.dpmp_selection.append(1 - dpmn / dpmp)
    out.groups = {k: [g[s] for s in seeds if s in g] for k, g in groups.items()}
    return out


def accuracy_at(record: Record, budget: float) -> tuple[int, float] | None:
    """(round, accuracy) of the last evaluated round whose cumulative bytes are within `budget`; None if none."""
    found = None
    for rnd, accuracy, sent in record.curve:
        if sent <= budget * (1 + 1e-12) and accuracy is not None:
            found = (rnd, accuracy)
    return found


@dataclass
class EqualBytes:
    algorithm: str
    budget_mb: list[float]
    rounds: list[int]  # the algorithm's rounds within the budget
    accuracy: list[float]
    reference_rounds: list[int]
    reference_accuracy: list[float]
    skipped: int  # seeds where one of the two had no evaluated round within the budget

    @property
    def differences(self) -> list[float]:
        return [a - b for a, b in zip(self.accuracy, self.reference_accuracy)]


def equal_bytes(main: list[Record], reference: str = "dfl") -> list[EqualBytes]:
    """For each algorithm that sends bytes, its and `reference`'s accuracy at the smaller total, seed by seed."""
    ref = select(main, algorithm=reference)
    rows = []
    for name in algorithms_in(main):
        if name == reference:
            continue
        row = EqualBytes(name, [], [], [], [], [], 0)
        for a, b in paired(select(main, algorithm=name), ref):
            if a.bytes_total <= 0 or b.bytes_total <= 0:
                continue
            budget = min(a.bytes_total, b.bytes_total)
            at_a, at_b = accuracy_at(a, budget), accuracy_at(b, budget)
            if at_a is None or at_b is None:
                row.skipped += 1
                continue
            row.budget_mb.append(budget / 1e6)
            row.rounds.append(at_a[0])
            row.accuracy.append(at_a[1])
            row.reference_rounds.append(at_b[0])
            row.reference_accuracy.append(at_b[1])
        if row.budget_mb or row.skipped:
            rows.append(row)
    return rows


def local_verdict(differences: list[float]) -> str:
    """'above local' / 'below local' when the mean difference exceeds its seed-to-seed sd; else 'not established'."""
    if not differences:
        return "—"
    mean, sd = mean_sd(differences)
    if len(differences) < 2:
        return f"{OPEN} (1 seed)"
    if abs(mean) <= sd:
        return OPEN
    return ABOVE if mean > 0 else BELOW


def versus_local(group: list[Record], local: list[Record]) -> list[float]:
    """Per-seed accuracy differences (percentage points) of `group` minus `local`, paired by seed."""
    return [100 * (a.accuracy - b.accuracy) for a, b in paired(group, local)]


@dataclass
class SweepPoint:
    """One setting of a sweep: its label, and per algorithm the records and the paired differences from local."""

    label: str
    records: dict[str, list[Record]]
    versus_local: dict[str, list[float]]

    def stat(self, algorithm: str, value: Callable[[Record], float]) -> tuple[float, float]:
        return mean_sd(value(r) for r in self.records.get(algorithm, []))


def _partition_order(text: str) -> tuple[int, float]:
    kind, _, raw = text.partition(":")
    return {"shards": 0, "dirichlet": 1, "iid": 2}.get(kind, 3), float(raw or 0)


def sweep(records: Iterable[Record], study: str) -> list[SweepPoint]:
    """The points of the `scarcity` (by training samples per device, capped counts first, then all) or `skew` (by
    partition: shards:k by k, then dirichlet:α by α, then iid) study."""
    chosen = select(records, study=study)
    if study == "scarcity":
        keys: list[object] = sorted({r.train_per_device for r in chosen}, key=lambda n: (n == 0, n))
        pick = lambda r, k: r.train_per_device == k  # noqa: E731
    else:
        keys = sorted({r.partition for r in chosen}, key=lambda p: _partition_order(str(p)))
        pick = lambda r, k: r.partition == k  # noqa: E731
    points = []
    for key in keys:
        group = [r for r in chosen if pick(r, key)]
        by_algorithm = {name: select(group, algorithm=name) for name in algorithms_in(group)}
        local = by_algorithm.get("local", [])
        diffs = {name: versus_local(recs, local) for name, recs in by_algorithm.items() if name != "local" and local}
        samples = mean_sd(r.train_samples for r in group)[0]
        if study == "scarcity":
            label = f"{key}" if key else (f"all (~{samples:.0f})" if not math.isnan(samples) else "all")
        else:
            label = str(key)
        points.append(SweepPoint(label, by_algorithm, diffs))
    return points


def where_beats_local(points_by_study: dict[str, list[SweepPoint]], algorithm: str = "dpmn") -> list[str]:
    """Settings ('study: label') where `algorithm` is above local outside the seed spread."""
    return [f"{study}: {p.label}" for study, points in points_by_study.items() for p in points
            if local_verdict(p.versus_local.get(algorithm, [])) == ABOVE]


__all__ = ["ABOVE", "BELOW", "OPEN", "Decomposition", "EqualBytes", "SweepPoint", "accuracy_at", "decompose",
           "equal_bytes", "local_verdict", "sweep", "versus_local", "where_beats_local"]
