"""One run folder and one result type for every command (`fedge run`, `fedge recsys`, `fedge cache`).

A run folder holds:

* `metrics.jsonl` — one JSON object per round (or episode), appended and fsynced as it happens, so a crash loses at
  most the round in progress;
* `summary.json` — the final values, the resolved config (`config`) and the machine that made them
  (`environment`), written atomically when the run completes;
* `config.yaml` — the resolved config, loadable again with `--config`;
* whatever the command adds (checkpoints, plots, embeddings).

`environment()` records what a number depends on: fedge and torch versions, the CPU model and the kernels torch
picked for it (`torch.backends.cpu.get_cpu_capability()`: AVX2 and AVX-512 builds round differently, so bitwise
results hold per capability), and threads.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import yaml

from fedge import __version__
from fedge.output import JsonlWriter, atomic_write_bytes, atomic_write_json


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
    """Writes one run's folder; `metrics` appends to metrics.jsonl (kept when `append`, as on resume)."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics = JsonlWriter(self.path / "metrics.jsonl", truncate=not append)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write summary.json and, from its `config`, config.yaml (the summary carries `config` and `environment`:
        see `complete`)."""
        self.metrics.close()
        if "config" in summary:
            atomic_write_bytes(self.path / "config.yaml", yaml.safe_dump(summary["config"], sort_keys=False).encode())
        atomic_write_json(self.path / "summary.json", summary)

    def close(self) -> None:
        self.metrics.close()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RunFolder", "RunResult", "complete", "environment"]
