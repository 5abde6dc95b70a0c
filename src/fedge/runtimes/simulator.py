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

import torch

from fedge.algorithms import create
from fedge.algorithms.state import FederationState
from fedge.config import to_dict
from fedge.experiment import ExperimentConfig
from fedge.output import JsonlWriter, atomic_write_bytes, atomic_write_json, dumps, read_jsonl
from fedge.runtimes import checkpoint
from fedge.runtimes.faults import FaultModel
from fedge.runtimes.latency import LatencyModel, placement
from fedge.runtimes.rounds import RoundEnv, RoundTimer, run_round
from fedge.runtimes.setup import TRAIN_STREAM, Setup, initial_state, make_context, prepare, stream
from fedge.runtimes.trainer import make_trainer

SUMMARY_KEYS = ("accuracy_mean", "accuracy_p10", "loss_mean", "bytes_total", "neighbours_mean", "density_mean",
                "bytes_edge_total", "bytes_backhaul_total", "participants", "time_total")


def _resume(out: Path, config: ExperimentConfig, algorithm_name: str, state: FederationState,
            generators: dict[str, torch.Generator]) -> tuple[FederationState, list[dict[str, Any]]]:
    """Load out/checkpoint.pt if present (verified first), restore generators, truncate the logs to its round."""
    checkpoint.remove_stale_temporaries(out)
    path = out / checkpoint.FILENAME
    if not path.exists():
        return state, []
    saved = checkpoint.load(path, config, algorithm_name)
    restored = FederationState.from_state_dict(saved.state)
    checkpoint.restore_generators(saved.rng, **generators)
    atomic_write_bytes(out / "metrics.jsonl", "".join(dumps(m) + "\n" for m in saved.history).encode())
    neighbours = out / "neighbours.jsonl"
    kept = [r for r in read_jsonl(neighbours) if r.get("round", 0) <= saved.round] if neighbours.exists() else []
    atomic_write_bytes(neighbours, "".join(dumps(r) + "\n" for r in kept).encode())
    return restored, list(saved.history)


def simulate(config: ExperimentConfig, algorithm_name: str, out_dir: str | Path | None,
             setup: Setup | None = None, on_round: Callable[[dict[str, Any]], None] | None = None,
             checkpoint_every: int = 0, resume: bool = False) -> dict[str, Any]:
    """Run `algorithm_name` for `config.rounds` rounds; returns the summary (also written to out_dir).

    `checkpoint_every` K > 0 writes out_dir/checkpoint.pt every K rounds and after the last; `resume` continues
    from out_dir/checkpoint.pt when there is one (refusing a corrupt or foreign one with a ConfigError).
    """
    setup = setup or prepare(config)
    ctx = make_context(config, setup)
    ctx.coordinates, ctx.edge_coordinates = placement(config)
    state = initial_state(config, setup)
    algorithm = create(algorithm_name)
    trainer = make_trainer(setup.model, setup.data.devices, config.train)
    generator = stream(config.seed, TRAIN_STREAM)
    faults = FaultModel.create(config)
    env = RoundEnv(faults=faults if faults.enabled else None,
                   latency=LatencyModel.create(config, ctx.data_sizes) if config.latency.enabled else None)
    timer = RoundTimer()
    out = Path(out_dir) if out_dir is not None else None
    generators = {"train": generator, "context": ctx.generator}
    history: list[dict[str, Any]] = []
    if resume and out is not None and out.is_dir():
        state, history = _resume(out, config, algorithm_name, state, generators)
    metrics_log = JsonlWriter(out / "metrics.jsonl", truncate=not history) if out else None
    neighbours_log = JsonlWriter(out / "neighbours.jsonl", truncate=not history) if out else None
    started = time.perf_counter()
    phase_by_round: list[dict[str, float]] = []  # this process's rounds only (not those before a resume)
    previous: dict[str, float] = {}
    try:
        while state.round < config.rounds:
            last = state.round + 1 == config.rounds
            metrics = run_round(state, ctx, algorithm, trainer, generator, timer,
                                evaluate=last or (state.round + 1) % config.eval_every == 0, env=env)
            history.append(metrics)
            phase_by_round.append({k: v - previous.get(k, 0.0) for k, v in timer.seconds.items()})
            previous = dict(timer.seconds)
            if metrics_log:
                metrics_log.write(metrics)
            if neighbours_log:
                neighbours_log.write({"round": state.round, "neighbours": [
                    row.nonzero().flatten().tolist() for row in state.neighbours]})
            if out is not None and checkpoint_every > 0 and (last or state.round % checkpoint_every == 0):
                checkpoint.save(out / checkpoint.FILENAME, checkpoint.Checkpoint(
                    algorithm=algorithm_name, round=state.round, config_hash=checkpoint.config_hash(config),
                    config=to_dict(config), checkpoint_every=checkpoint_every, state=state.state_dict(),
                    rng=checkpoint.generator_states(**generators), history=history))
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
        "phase_seconds_by_round": phase_by_round,
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
