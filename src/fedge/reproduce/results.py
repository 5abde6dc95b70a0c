"""Results of a reproduce grid: one `Record` per cell, seed statistics, MB-to-target, and results.csv.

results.csv holds one row per cell (a cell includes its seed), sorted, with values rounded to 6 decimals and no
timings, so an interrupted-and-resumed run writes the same file byte for byte as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fedge.output import atomic_write_bytes
from fedge.reproduce.cache import CellCache
from fedge.reproduce.grid import Cell

# Reference algorithms for the automatic target accuracy: the method and the baseline it is compared with.
TARGET_REFERENCES = ("dpmn", "dfl")
TARGET_FRACTION = 0.95


@dataclass
class Record:
    """The outcome of one cell: final values plus the per-round curve (round, accuracy or None, cumulative bytes)."""

    algorithm: str
    devices: int
    delta: float
    seed: int
    accuracy: float
    bytes_total: float
    studies: list[str] = field(default_factory=lambda: ["main"])
    dataset: str = "digits"
    rounds: int = 0
    partition: str = ""
    accuracy_p10: float = math.nan
    neighbours: float = math.nan
    density: float = math.nan
    curve: list[tuple[int, float | None, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    key: str = ""
    target_density: float = 0.5  # pruning.target_density of the cell's config
    train_per_device: int = 0  # data.train_per_device; 0: no cap
    train_samples: float = math.nan  # mean training samples per device, as loaded
    classes: float = math.nan  # mean distinct training labels per device
    neighbours_rounds: float = math.nan  # neighbours per device, averaged over the rounds (not only the last)
    handshake_bytes: float = 0.0  # bytes of neighbour selection: probes and requests

    @property
    def mb(self) -> float:
        return self.bytes_total / 1e6

    def mb_to_target(self, target: float) -> float | None:
        """Cumulative MB sent when the mean personalized accuracy first reached `target`; None if it never did."""
        for _round, accuracy, sent in self.curve:
            if accuracy is not None and accuracy >= target:
                return sent / 1e6
        return None


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _mean_of(values: Iterable[Any]) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers) if numbers else math.nan


def from_cache(cell: Cell, stored: dict[str, Any]) -> Record:
    summary, config = stored["summary"], stored["config"]
    curve = [(int(m["round"]), m["accuracy_mean"] if isinstance(m.get("accuracy_mean"), (int, float)) else None,
              float(m.get("bytes_total", 0))) for m in stored["history"]]
    return Record(algorithm=cell.algorithm, devices=cell.devices, delta=cell.delta, seed=cell.seed,
                  accuracy=_num(summary.get("accuracy_mean")), bytes_total=_num(summary.get("bytes_total")),
                  studies=list(cell.studies), dataset=config["data"]["dataset"], rounds=int(config["rounds"]),
                  partition=config["data"]["partition"], accuracy_p10=_num(summary.get("accuracy_p10")),
                  neighbours=_num(summary.get("neighbours_mean")), density=_num(summary.get("density_mean")),
                  curve=curve, seconds=float(stored.get("seconds", 0.0)),
                  cpu_seconds=float(stored.get("cpu_seconds", 0.0)), key=cell.key,
                  target_density=cell.target_density, train_per_device=cell.train_per_device,
                  train_samples=_num(stored.get("data_stats", {}).get("train_samples_mean")),
                  classes=_num(stored.get("data_stats", {}).get("classes_mean")),
                  neighbours_rounds=_mean_of(m.get("neighbours_mean") for m in stored["history"]),
                  handshake_bytes=sum(_num(v) for k, v in (summary.get("bytes_by_kind") or {}).items()
                                      if k in ("probe", "request") and isinstance(v, (int, float))))


def load_records(cells: Iterable[Cell], cache: CellCache) -> list[Record]:
    records = []
    for cell in cells:
        stored = cache.load(cell)
        if stored is None:
            raise RuntimeError(f"cell {cell.key} ({cell.algorithm}) has no result in {cache.folder}")
        records.append(from_cache(cell, stored))
    return records


def select(records: Iterable[Record], study: str | None = None, algorithm: str | None = None,
           devices: int | None = None, delta: float | None = None, density: float | None = None,
           train_per_device: int | None = None, partition: str | None = None) -> list[Record]:
    return [r for r in records
            if (study is None or study in r.studies) and (algorithm is None or r.algorithm == algorithm)
            and (devices is None or r.devices == devices) and (delta is None or abs(r.delta - delta) < 1e-9)
            and (density is None or abs(r.target_density - density) < 1e-9)
            and (train_per_device is None or r.train_per_device == train_per_device)
            and (partition is None or r.partition == partition)]


def by_seed(records: Iterable[Record]) -> dict[int, Record]:
    return {r.seed: r for r in records}


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def paired(a: Iterable[Record], b: Iterable[Record]) -> list[tuple[Record, Record]]:
    """Records of two groups matched by seed (same data split and initial model)."""
    right = by_seed(b)
    return [(r, right[r.seed]) for r in sorted(a, key=lambda r: r.seed) if r.seed in right]


def algorithms_in(records: Iterable[Record]) -> list[str]:
    order = ["dpmn", "dfl", "dpmp", "dpcg", "dpmn-r", "local", "fedavg"]
    names = {r.algorithm for r in records}
    return [n for n in order if n in names] + sorted(names - set(order))


def auto_target(main: list[Record]) -> float:
    """95% of the lower of DPMN's and DFL's final mean accuracy, rounded down to a whole percent: a quality both
    reach, so 'MB to target' compares what each paid for the same accuracy."""
    finals = [mean_sd(r.accuracy for r in select(main, algorithm=name))[0] for name in TARGET_REFERENCES]
    finals = [f for f in finals if not math.isnan(f)]
    if not finals:
        finals = [mean_sd(r.accuracy for r in select(main, algorithm=name))[0] for name in algorithms_in(main)
                  if name != "local"] or [0.5]
    return math.floor(100 * TARGET_FRACTION * min(finals)) / 100


CSV_COLUMNS = ["algorithm", "dataset", "devices", "delta", "seed", "rounds", "partition", "studies",
               "accuracy_mean", "accuracy_p10", "mb_total", "mb_to_target", "target_accuracy", "neighbours_mean",
               "density_mean", "cell", "target_density", "train_per_device", "train_samples_mean", "classes_mean"]


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def csv_text(records: Iterable[Record], target: float) -> str:
    """results.csv: one row per cell and seed, sorted; no timings (they differ from run to run)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in sorted(records, key=lambda r: (r.algorithm, r.devices, r.delta, r.partition, r.target_density,
                                            r.train_per_device, r.seed, r.key)):
        writer.writerow([r.algorithm, r.dataset, r.devices, f"{r.delta:g}", r.seed, r.rounds, r.partition,
                         ";".join(sorted(r.studies)), _fmt(r.accuracy), _fmt(r.accuracy_p10), _fmt(r.mb),
                         _fmt(r.mb_to_target(target)), f"{target:.2f}", _fmt(r.neighbours), _fmt(r.density),
                         r.key, f"{r.target_density:g}", r.train_per_device or "", _fmt(r.train_samples),
                         _fmt(r.classes)])
    return buffer.getvalue()


def write_csv(path: Any, records: Iterable[Record], target: float) -> None:
    atomic_write_bytes(path, csv_text(records, target).encode())
