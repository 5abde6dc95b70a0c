"""The in-process simulator: all devices in one process, models stacked in one parameter bank.

`simulate` runs one algorithm of an experiment and writes its run folder:
`metrics.jsonl` (one object per round), `neighbours.jsonl` (each round's S_i), `summary.json` (final values and the
resolved config).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedge.algorithms import create
from fedge.config import to_dict
from fedge.experiment import ExperimentConfig
from fedge.output import JsonlWriter, atomic_write_json
from fedge.runtimes.rounds import RoundTimer, run_round
from fedge.runtimes.setup import TRAIN_STREAM, Setup, initial_state, make_context, prepare, stream
from fedge.runtimes.trainer import make_trainer

SUMMARY_KEYS = ("accuracy_mean", "accuracy_p10", "loss_mean", "bytes_total", "neighbours_mean", "density_mean")


def simulate(config: ExperimentConfig, algorithm_name: str, out_dir: str | Path | None,
             setup: Setup | None = None, on_round: Callable[[dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
    """Run `algorithm_name` for `config.rounds` rounds; returns the summary (also written to out_dir)."""
    setup = setup or prepare(config)
    ctx = make_context(config, setup)
    state = initial_state(config, setup)
    algorithm = create(algorithm_name)
    trainer = make_trainer(setup.model, setup.data.devices, config.train)
    generator = stream(config.seed, TRAIN_STREAM)
    timer = RoundTimer()
    out = Path(out_dir) if out_dir is not None else None
    metrics_log = JsonlWriter(out / "metrics.jsonl") if out else None
    neighbours_log = JsonlWriter(out / "neighbours.jsonl") if out else None
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for _ in range(config.rounds):
            last = state.round + 1 == config.rounds
            metrics = run_round(state, ctx, algorithm, trainer, generator, timer,
                                evaluate=last or (state.round + 1) % config.eval_every == 0)
            history.append(metrics)
            if metrics_log:
                metrics_log.write(metrics)
            if neighbours_log:
                neighbours_log.write({"round": state.round, "neighbours": [
                    row.nonzero().flatten().tolist() for row in state.neighbours]})
            if on_round:
                on_round(metrics)
    finally:
        for log in (metrics_log, neighbours_log):
            if log:
                log.close()
    final = history[-1]
    summary = {key: final.get(key) for key in SUMMARY_KEYS}
    summary.update({
        "algorithm": algorithm_name,
        "rounds": state.round,
        "seconds": time.perf_counter() - started,
        "phase_seconds": dict(timer.seconds),
        "model_parameters": setup.model.dim,
        "config": to_dict(config),
    })
    if out:
        atomic_write_json(out / "summary.json", summary)
    summary["_state"] = state
    summary["_history"] = history
    return summary


def with_overrides(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A deep copy of `config` with top-level fields replaced."""
    clone = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone
