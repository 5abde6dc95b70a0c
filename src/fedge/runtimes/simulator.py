"""The in-process simulator: all devices in one process, models stacked in one parameter bank, every exchange a
message on an in-process transport (`runtime.transport`: direct or loopback).

`simulate` runs one algorithm of an experiment and writes its run folder (fedge.runfolder): `metrics.jsonl` (one
object per round), `neighbours.jsonl` (each round's S_i, by device id), `summary.json` (final values, the resolved
config and the environment), `config.yaml`, and `checkpoint.pt` when checkpointing.

A round whose training loss is not finite stops the run with `fedge.runfolder.Diverged` (FAILED in the folder, no
summary). Values without a number are null (fedge.runtimes.rounds): the loss of a round nobody trained in, the
accuracies of a round without members with test samples.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedge.algorithms import ALGORITHMS, create
from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.context import RunContext
from fedge.config import to_dict
from fedge.experiment import ExperimentConfig
from fedge.messaging import Inbox, Ledger, make_transport
from fedge.messaging.distributed import DistributedTransport, Placement
from fedge.output import JsonlWriter, atomic_write_bytes, dumps, read_jsonl
from fedge.runfolder import Diverged, RunFolder, RunResult, complete
from fedge.runtimes import checkpoint, shard_checkpoint
from fedge.runtimes.device_threads import intra_op_threads
from fedge.runtimes.distributed import Shard
from fedge.runtimes.faults import FaultModel
from fedge.runtimes.latency import LatencyModel
from fedge.runtimes.privacy import PrivacyRun, peer_release, prepare_privacy
from fedge.runtimes.rounds import Federation, RoundEnv, RoundTimer, run_round
from fedge.runtimes.setup import Setup, initial_devices, make_context, prepare, storage_order, stored_devices
from fedge.runtimes.sharing import PeerExchange
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer, make_trainer, run_threads

SUMMARY_KEYS = ("accuracy_mean", "accuracy_p10", "val_accuracy_mean", "loss_mean", "bytes_total", "bytes_by_link",
                "neighbours_mean", "density_mean", "bytes_edge_total", "bytes_backhaul_total", "participants",
                "time_total")


def _resume(out: Path, config: ExperimentConfig, algorithm_name: str, fed: Federation,
            ledger: Ledger) -> tuple[list[dict[str, Any]], str | None]:
    """Load out/checkpoint.pt if present (verified first, also that the folder's newest results are its own) into
    `fed` and `ledger`; truncate the logs to its round. Returns its history and run id."""
    checkpoint.remove_stale_temporaries(out)
    path = out / checkpoint.FILENAME
    if not path.exists():
        return [], None
    saved = checkpoint.load(path, config, algorithm_name)
    checkpoint.verify(out, saved)
    return _restore(saved, fed, ledger, out)


def _restore(saved: checkpoint.Checkpoint, fed: Federation, ledger: Ledger,
             out: Path | None) -> tuple[list[dict[str, Any]], str | None]:
    """Load `saved` into `fed` and `ledger`; truncate out's logs (if this process writes them) to its round."""
    fed.load_state_dict(saved.federation)
    ledger.load_state_dict(saved.ledger)
    if out is not None:
        atomic_write_bytes(out / "metrics.jsonl", "".join(dumps(m) + "\n" for m in saved.history).encode())
        neighbours = out / "neighbours.jsonl"
        kept = [r for r in read_jsonl(neighbours) if r.get("round", 0) <= saved.round] if neighbours.exists() else []
        atomic_write_bytes(neighbours, "".join(dumps(r) + "\n" for r in kept).encode())
    return list(saved.history), saved.run_id or None


def checked(metrics: dict[str, Any], where: str, hint: str) -> dict[str, Any]:
    """A round's metrics, or `Diverged` if its training loss is not finite."""
    loss = metrics.get("loss_mean")
    if isinstance(loss, float) and not math.isfinite(loss):
        raise Diverged(f"{where}: the training loss is {loss} — the model diverged; {hint}")
    return metrics


def divergence_hint(sim: Simulation) -> str:
    """The settings to look at when `sim`'s model diverges."""
    hint = "lower train.lr"
    if isinstance(sim.fed.algorithm.combiner, NeighbourRegularizer):
        hint += " (or regularizer.lam)"
    if sim.privacy is not None:
        hint += "; the DP noise may be too strong: raise privacy.target_epsilon or lower privacy.noise_multiplier"
    return hint


def neighbour_ids(ctx: RunContext, adjacency: torch.Tensor) -> list[list[int]]:
    """S_i as device ids, listed by device id (independent of storage order)."""
    rows = ctx.rows_of(torch.arange(len(ctx.ids)))
    return [sorted(ctx.ids[adjacency[row]].tolist()) for row in rows.tolist()]


def _with_report(record: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """`record` plus a combiner's report (`Combiner.report_round` / `report`), which may not replace a key."""
    clash = sorted(record.keys() & report.keys())
    if clash:
        raise ValueError(f"a combiner's report would replace {clash}")
    return {**record, **report}


@dataclass
class Simulation:
    """One algorithm's run, built and stepped round by round (what `simulate` drives; usable on its own)."""

    config: ExperimentConfig
    setup: Setup
    ctx: RunContext
    fed: Federation
    trainer: SequentialTrainer | BatchedTrainer
    env: RoundEnv
    ledger: Ledger
    timer: RoundTimer
    privacy: PrivacyRun | None = None

    @staticmethod
    def build(config: ExperimentConfig, algorithm_name: str, setup: Setup | None = None,
              device_order: Sequence[int] | torch.Tensor | None = None,
              placement: Placement | None = None) -> Simulation:
        """Everything round 1 needs; `device_order` stores device `device_order[r]` in row r (default: device r);
        `placement`: this process's devices in a distributed run (device rows are ids there)."""
        ALGORITHMS.check([algorithm_name], "algorithms")
        setup = setup or prepare(config)
        n = config.data.devices
        if placement is not None and device_order is not None:
            raise ValueError("a distributed run stores device i in row i")
        ids = storage_order(config, device_order)
        ledger = Ledger(n)
        transport = (DistributedTransport(ledger, placement) if placement is not None
                     else make_transport(config.runtime.transport, ledger, ids))
        ctx = make_context(config, setup, transport, ids)
        shard = Shard(placement) if placement is not None else None
        if shard is not None:
            ctx.agree_max = shard.agree_max
        devices = initial_devices(config, setup)
        effective, algorithm, privacy = prepare_privacy(config, algorithm_name, ctx.data_sizes,
                                                        lambda c: create(algorithm_name, c))
        ctx.privacy = privacy.accountant if privacy is not None else None
        ctx.release = peer_release(privacy, effective, ctx)
        algorithm.start(ctx, devices)
        fed = Federation(devices, algorithm, PeerExchange(n, ctx.dim), Inbox.empty(ctx.dim),
                         torch.zeros(n, n, dtype=torch.bool), accountant=ctx.privacy)
        faults = FaultModel.create(config.faults, config.seed, config.rounds, ids, config.hierarchy.clusters)
        latency = (LatencyModel.create(config.latency, config.seed, ids, ctx.data_sizes, config.train.epochs)
                   if config.latency.enabled else None)
        env = RoundEnv(faults=faults if faults.enabled else None, latency=latency,
                       dp_sgd=privacy.dp_sgd if privacy is not None else None,
                       dp_schedule=privacy.dp_schedule if privacy is not None else None,
                       shard=shard)
        trainer = make_trainer(setup.model, stored_devices(setup, ids), config.train)
        return Simulation(config, setup, ctx, fed, trainer, env, ledger, RoundTimer(), privacy)

    def step(self) -> dict[str, Any]:
        """Run the next round (evaluating on the configured schedule and in the last round); returns its metrics."""
        number = self.fed.round + 1
        evaluate = number == self.config.rounds or number % self.config.eval_every == 0
        with intra_op_threads(run_threads(self.setup.model, self.config.train)):
            metrics = run_round(self.fed, self.ctx, self.trainer, self.timer, evaluate=evaluate, env=self.env)
        return _with_report(metrics, self.fed.algorithm.combiner.report_round(self.fed.round))

    @property
    def done(self) -> bool:
        return self.fed.round >= self.config.rounds or (self.privacy is not None and self.privacy.stopped is not None)

    def stop_at_target(self) -> bool:
        """Before a round: stop (and say why) if it could take a device past `privacy.target_epsilon`."""
        dp = self.config.privacy
        if self.privacy is None or dp.calibrate or not self.privacy.would_exceed(dp.target_epsilon):
            return False
        self.privacy.stopped = (f"stopped before round {self.fed.round + 1}: it could take a device past "
                                f"privacy.target_epsilon = {dp.target_epsilon}")
        return True

    def checkpoint(self, algorithm_name: str, every: int, history: list[dict[str, Any]],
                   run_id: str = "") -> checkpoint.Checkpoint:
        return checkpoint.Checkpoint(
            algorithm=algorithm_name, round=self.fed.round, config_hash=checkpoint.config_hash(self.config),
            config=to_dict(self.config), checkpoint_every=every, federation=self.fed.state_dict(),
            ledger=self.ledger.state_dict(), history=history, run_id=run_id)


def simulate(config: ExperimentConfig, algorithm_name: str, out_dir: str | Path | None,
             setup: Setup | None = None, on_round: Callable[[dict[str, Any]], None] | None = None,
             checkpoint_every: int = 0, resume: bool = False,
             device_order: Sequence[int] | torch.Tensor | None = None,
             placement: Placement | None = None, shard_dir: Path | None = None) -> RunResult:
    """Run `algorithm_name` for `config.rounds` rounds; returns the result (also written to out_dir).

    `checkpoint_every` K > 0 writes out_dir/checkpoint.pt every K rounds and after the last; `resume` continues
    from out_dir/checkpoint.pt when there is one (refusing a corrupt or foreign one with a ConfigError).
    `device_order` stores device `device_order[r]` in row r (default: device r); results do not depend on it.
    `placement`: a distributed run's process (fedge.runtimes.distributed): it runs its devices, every process calls
    this together, and only the one given `out_dir` writes the run's files; each checkpoints its part into
    `shard_dir` (fedge.runtimes.shard_checkpoint).
    """
    if placement is not None and (checkpoint_every or resume) and shard_dir is None:
        raise ValueError("a distributed run checkpoints into shard_dir")
    sim = Simulation.build(config, algorithm_name, setup, device_order, placement)
    shard = sim.env.shard
    out = Path(out_dir) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    run_id = None
    if resume and placement is not None and shard_dir is not None:
        saved = shard_checkpoint.load(shard_dir, config, algorithm_name, placement)
        if saved is not None:
            history, run_id = _restore(saved, sim.fed, sim.ledger, out)
    elif resume and out is not None and out.is_dir():
        history, run_id = _resume(out, config, algorithm_name, sim.fed, sim.ledger)
    folder = RunFolder(out, append=bool(history), run_id=run_id) if out else None
    neighbours_log = JsonlWriter(out / "neighbours.jsonl", truncate=not history) if out else None
    hint = divergence_hint(sim)
    started = time.perf_counter()
    phase_by_round: list[dict[str, float]] = []  # this process's rounds only (not those before a resume)
    previous: dict[str, float] = {}
    try:
        while not sim.done and not sim.stop_at_target():
            metrics = checked(sim.step(), f"{algorithm_name} round {sim.fed.round}", hint)
            history.append(metrics)
            phase_by_round.append({k: v - previous.get(k, 0.0) for k, v in sim.timer.seconds.items()})
            previous = dict(sim.timer.seconds)
            if folder:
                folder.log(metrics)
            adjacency = sim.fed.neighbours if shard is None else shard.complete(sim.fed.neighbours)
            if neighbours_log:
                neighbours_log.write({"round": sim.fed.round, "neighbours": neighbour_ids(sim.ctx, adjacency)})
            if checkpoint_every > 0 and (sim.done or sim.fed.round % checkpoint_every == 0):
                state = sim.checkpoint(algorithm_name, checkpoint_every, history, folder.run_id if folder else "")
                if placement is not None and shard_dir is not None:
                    shard_checkpoint.save(shard_dir, state, placement, state.run_id)
                elif out is not None:
                    checkpoint.save(out / checkpoint.FILENAME, state)
            if on_round:
                on_round(metrics)
    except Diverged as err:
        if folder:
            folder.fail(str(err))
        raise
    finally:
        for log in (folder, neighbours_log):
            if log:
                log.close()
    final = history[-1]
    ledger = sim.ledger if shard is None else shard.ledger(sim.ledger)
    summary = {key: final.get(key) for key in SUMMARY_KEYS}
    summary.update({
        "algorithm": algorithm_name,
        "rounds": sim.fed.round,
        "transport": sim.ctx.transport.name,
        "bytes_by_kind": dict(ledger.bytes_by_kind),
        "messages_by_link": dict(ledger.messages_by_link),
        "seconds": time.perf_counter() - started,
        "phase_seconds": dict(sim.timer.seconds),
        "phase_seconds_by_round": phase_by_round,
        "model_parameters": sim.setup.model.dim,
    })
    if shard is not None and isinstance(sim.ctx.transport, DistributedTransport):
        summary["processes"] = placement.world if placement is not None else 1
        summary["distributed_overhead_bytes"] = shard.total(sim.ctx.transport.overhead_bytes)
    if sim.privacy is not None:
        summary["privacy"] = sim.privacy.summary(sim.ctx, config.privacy)
    summary = _with_report(summary, sim.fed.algorithm.combiner.report())
    summary = complete(summary, to_dict(config))
    if folder:
        folder.finish(summary)
    return RunResult(summary, history, state=sim.fed, extra={"context": sim.ctx})


def with_overrides(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A deep copy of `config` with top-level fields replaced."""
    clone = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone
