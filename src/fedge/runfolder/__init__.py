"""One run folder and one result type for every command (`fedge run`, `fedge recsys`, `fedge cache`).

A run folder holds:

* `metrics.jsonl` — one JSON object per round (or episode), appended and fsynced as it happens, so a crash loses at
  most the round in progress;
* `summary.json` — the final values, the resolved config (`config`), the machine that made them (`environment`)
  and the run's id (`run_id`, also in its checkpoints), written atomically and last: a folder holds a finished run
  exactly when it has its summary;
* `config.yaml` — the resolved config, loadable again with `--config`;
* `FAILED` — instead of a summary, when the run stopped because it diverged: the one-line message (`Diverged`);
* whatever the command adds (checkpoints, plots, embeddings).

Every file is strict JSON (no NaN or Infinity, `fedge.output`). A loss, a parameter or a score that stops being a
finite number is not a result but a divergence: the run raises `Diverged` (a `ConfigError`: one line, exit 2)
naming the round and the setting to lower, and writes FAILED. A metric that legitimately has no value (the loss of
a round nobody trained in, the accuracy of a round without members) is null where it is computed.

How a folder is created, replaced and published (fresh folder, staged rerun, resume) is `fedge.runfolder.staging`.

`environment()` records what a number depends on: fedge and torch versions, the CPU model and the kernels torch
picked for it (`torch.backends.cpu.get_cpu_capability()`: AVX2 and AVX-512 builds round differently, so bitwise
results hold per capability), and threads.
"""

from __future__ import annotations

import math
import os
import platform
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import yaml

from fedge import __version__
from fedge.config import ConfigError
from fedge.output import JsonlWriter, atomic_write_bytes, atomic_write_json

FAILED = "FAILED"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
# Files a run folder may hold (those of every command): what `fedge.runfolder.staging` accepts to replace, and
# what a fresh RunFolder clears (they describe an earlier run).
RUN_FILES = frozenset({METRICS, SUMMARY, FAILED, "config.yaml", "neighbours.jsonl", "checkpoint.pt",
                       "comparison.json", "item_embeddings.pt", "topk.json", "cost_per_episode.png",
                       "hit_ratios.png"})


class Diverged(ConfigError):
    """The run's loss, parameters or scores stopped being finite numbers: the model diverged. The message names the
    round and the setting to look at, e.g. "round 3: the training loss is nan — the model diverged; lower train.lr".
    """


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def check_finite(value: Any, what: str, where: str, hint: str) -> None:
    """Raise `Diverged` unless `value` (a float, or a tensor: all of it) is finite."""
    if isinstance(value, torch.Tensor):
        if bool(torch.isfinite(value).all()):
            return
        bad = value[~torch.isfinite(value)]
        raise Diverged(f"{where}: the {what} include {_number(float(bad[0]))} — the model diverged; {hint}")
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise Diverged(f"{where}: the {what} is {_number(float(value))} — the model diverged; {hint}")


def new_run_id() -> str:
    """A fresh run id: 12 hex digits, stored in summary.json and in every checkpoint of the run."""
    return uuid.uuid4().hex[:12]


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine and software a result was produced with."""
    return {
        "fedge": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def complete(summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """`summary` with the resolved config and the environment added (what every summary.json carries)."""
    return {**summary, "config": config, "environment": environment()}


@dataclass
class RunResult:
    """What a run returns: the summary (as written to summary.json), the per-round history (as in metrics.jsonl) and,
    for library users and tests, the final in-memory state (never written)."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    state: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class RunFolder:
    """Writes one run's folder; `metrics` appends to metrics.jsonl (kept when `append`, as on resume).

    A run that starts afresh (`append` false) clears what an earlier run left in the folder (RUN_FILES: an old
    summary, checkpoint or FAILED would otherwise sit beside the new metrics); a resumed one removes the summary and
    FAILED only (the run is unfinished again until `finish`)."""

    def __init__(self, path: str | Path, append: bool = False, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or new_run_id()
        for name in ((SUMMARY, FAILED) if append else RUN_FILES - {METRICS}):
            (self.path / name).unlink(missing_ok=True)
        self.metrics = JsonlWriter(self.path / METRICS, truncate=not append)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write config.yaml (from the summary's `config`: see `complete`) and then summary.json, with the run id
        added to `summary` (in place, so the caller's result carries it too)."""
        self.metrics.close()
        summary.setdefault("run_id", self.run_id)
        if "config" in summary:
            atomic_write_bytes(self.path / "config.yaml", yaml.safe_dump(summary["config"], sort_keys=False).encode())
        atomic_write_json(self.path / SUMMARY, summary)

    def fail(self, message: str) -> None:
        """End a diverged run: FAILED holds `message` (no summary.json is written)."""
        self.metrics.close()
        atomic_write_bytes(self.path / FAILED, (message + "\n").encode())

    def close(self) -> None:
        self.metrics.close()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FAILED", "RUN_FILES", "Diverged", "RunFolder", "RunResult", "check_finite", "complete", "environment",
           "new_run_id"]
