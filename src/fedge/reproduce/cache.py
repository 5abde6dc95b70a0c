"""The cell cache: one JSON file per finished cell, named by the hash of its resolved config.

A cell is written atomically (temp file, fsync, rename) only once its last round is done, so a run killed at any
moment — SIGKILL included — loses at most the cells in progress, and a rerun skips every cell whose file exists.
A file whose recorded key, algorithm or fedge version does not match is ignored and recomputed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fedge
from fedge.config import ConfigError, build
from fedge.experiment import ExperimentConfig
from fedge.output import atomic_write_json, dumps
from fedge.reproduce.grid import Cell, engine_fingerprint

CACHE_FORMAT = 1


class CellCache:
    """Finished cells under `folder/<key>.json`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, cell: Cell) -> dict[str, Any] | None:
        """The stored result of `cell`, or None when it is missing or was made for something else."""
        path = self.path(cell.key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if (not isinstance(record, dict) or record.get("key") != cell.key or record.get("format") != CACHE_FORMAT
                or record.get("algorithm") != cell.algorithm or record.get("fedge") != fedge.__version__):
            return None
        return record

    def has(self, cell: Cell) -> bool:
        return self.load(cell) is not None

    def store(self, cell: Cell, summary: dict[str, Any], history: list[dict[str, Any]], seconds: float,
              cpu_seconds: float = 0.0, data_stats: dict[str, float] | None = None) -> None:
        public = {k: v for k, v in summary.items() if not k.startswith("_") and k not in ("config", "seconds",
                                                                                        "phase_seconds")}
        atomic_write_json(self.path(cell.key), {
            "format": CACHE_FORMAT,
            "key": cell.key,
            "algorithm": cell.algorithm,
            "fedge": fedge.__version__,
            "engine": cell.engine,
            "config": cell.config,
            "summary": public,
            "history": history,
            "seconds": seconds,  # wall clock, for information only (never in results.csv)
            "cpu_seconds": cpu_seconds,  # CPU time of the worker process: what the cell costs on an idle core
            "data_stats": data_stats or {},  # training samples and classes per device (mean), for the sweeps
        })


# One data/model setup per worker process, reused by consecutive cells with the same data (prepare is the costly
# part on real datasets). Keyed by what `prepare` reads: the data config, the seed and the model.
_SETUP: dict[str, Any] = {}


def _setup_for(config: ExperimentConfig) -> Any:
    from fedge.config import to_dict
    from fedge.runtimes.setup import prepare

    key = dumps({"data": to_dict(config.data), "seed": config.seed, "model": config.train.model})
    if key not in _SETUP:
        _SETUP.clear()  # keep one: a real dataset's tensors are large
        _SETUP[key] = prepare(config)
    return _SETUP[key]


def run_cell(cell: Cell, cache_folder: str, tick: Callable[[], None] | None = None,
             parent_pid: int | None = None) -> float:
    """Compute `cell` and store it; returns its seconds. Skips work when the file already exists (another run
    may have finished it). A worker whose parent died (SIGKILL of the command) stops at the next round instead of
    computing on as an orphan."""
    from fedge.runtimes.simulator import simulate

    cache = CellCache(cache_folder)
    if cache.has(cell):
        return 0.0
    if cell.engine and engine_fingerprint() != cell.engine:
        raise ConfigError("fedge's engine source changed while this run was going; run the command again to "
                          "compute the remaining cells with the new code (finished cells are kept)")
    config = build(ExperimentConfig, cell.config)
    config.train.threads = 1  # the pool runs cells side by side, one core each (results do not depend on it)
    started, cpu_started = time.perf_counter(), time.process_time()
    setup = _setup_for(config)

    def on_round(_metrics: dict[str, Any]) -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(1)
        if tick is not None:
            tick()

    result = simulate(config, cell.algorithm, None, setup=setup, on_round=on_round)
    seconds = time.perf_counter() - started
    history = [_plain(m) for m in result.history]
    cache.store(cell, result.summary, history, seconds, time.process_time() - cpu_started, data_stats(setup.data))
    return seconds


def data_stats(data: Any) -> dict[str, float]:
    """Mean training samples and mean distinct training labels per device of a `FederatedData`."""
    sizes = [len(d.y_train) for d in data.devices]
    classes = [len(labels) for labels in data.label_sets()]
    return {"train_samples_mean": sum(sizes) / len(sizes), "train_samples_min": float(min(sizes)),
            "classes_mean": sum(classes) / len(classes)}


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """A per-round metrics dict as JSON-safe plain values (round-trips through `dumps`)."""
    return json.loads(dumps(metrics))
