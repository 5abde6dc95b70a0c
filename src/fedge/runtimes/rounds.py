"""The round loop of `fedge run`, written once for every algorithm (the in-process simulator drives it).

One round (DPMN order, paper section III.C), every exchange a message on `ctx.transport`:
0. participation: the fault model says who is a member and who is online, the latency model drops devices that
   would miss the deadline, the algorithm's sampler picks the participants among the rest;
1. distribute: aggregators send participants the model they start from (client-server algorithms);
2. train: E local epochs on f_i (+ the combiner's penalty λ·∇h_i with the received models held fixed);
3. prune: the algorithm's pruner updates masks from local validation accuracy (if it has one);
4. select: the selector picks S_i, probing candidates with request/sketch messages;
5. exchange: each device requests and receives x̃_j ∘ m_j from every j ∈ S_i (fedge.runtimes.sharing);
6. combine: the combiner uses what was received (regularizer references, neighbour averaging) or uploads and
   aggregates (server, edge and cloud averages);
7. evaluate: personalized accuracy of each device's model (or the model its aggregator serves) on its own test set,
   and of the same models on its own validation split (`val_accuracy_mean`, the metric that tuning reads).

Every sum over devices in the metrics runs in device-id order, so metrics do not depend on storage order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from fedge.algorithms.base import Algorithm
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core import codec
from fedge.core.masks import density
from fedge.messaging import Inbox, Link
from fedge.privacy.accounting import PrivacyAccountant
from fedge.runtimes.distributed import Shard
from fedge.runtimes.dp_sgd import DPSGD
from fedge.runtimes.faults import FaultModel
from fedge.runtimes.latency import LatencyModel
from fedge.runtimes.sharing import PeerExchange
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer

PHASES = ("train", "prune", "select", "exchange", "combine", "evaluate")


@dataclass
class RoundTimer:
    """Seconds spent in each phase, accumulated over the run (for the benchmark's breakdown)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def add(self, phase: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] += now - started
        return now


@dataclass
class RoundEnv:
    """Runtime models the loop consults each round besides the algorithm: faults, simulated time and DP-SGD (all
    optional)."""

    faults: FaultModel | None = None
    latency: LatencyModel | None = None
    dp_sgd: DPSGD | None = None  # record-level DP-SGD in every device's local training
    dp_schedule: tuple[torch.Tensor, torch.Tensor] | None = None  # ([N] sampling rate, [N] steps a round) per row
    shard: Shard | None = None  # a distributed run: the devices this process hosts (fedge.runtimes.distributed)


@dataclass
class Federation:
    """Everything that changes from round to round, each part owning its state (all of it is checkpointed)."""

    devices: DeviceState
    algorithm: Algorithm
    exchange: PeerExchange
    inbox: Inbox  # what devices received in the last exchange (the regularizer's references)
    neighbours: torch.Tensor  # [N, N] bool: the last round's S_i (for logs)
    round: int = 0
    time_total: float = 0.0
    accuracies: torch.Tensor | None = None  # [N] per-row test accuracy at the last evaluation (not checkpointed)
    accountant: PrivacyAccountant | None = None  # per-device privacy histories (a DP run)

    def state_dict(self) -> dict[str, Any]:
        return {"devices": self.devices.state_dict(), "algorithm": self.algorithm.state_dict(),
                "exchange": self.exchange.state_dict(), "inbox": self.inbox.state_dict(),
                "neighbours": self.neighbours, "round": self.round, "time_total": self.time_total,
                "privacy": self.accountant.state_dict() if self.accountant is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.devices = DeviceState.from_state_dict(state["devices"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.exchange.load_state_dict(state["exchange"])
        self.inbox = Inbox.from_state_dict(state["inbox"])
        self.neighbours = state["neighbours"]
        self.round, self.time_total = int(state["round"]), float(state["time_total"])
        if self.accountant is not None and state.get("privacy") is not None:
            self.accountant.load_state_dict(state["privacy"])


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile of the finite values (linear interpolation); None when there are none."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    k = (len(finite) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return finite[lo] + (finite[hi] - finite[lo]) * (k - lo)


def _participation(fed: Federation, ctx: RunContext, env: RoundEnv, number: int) -> tuple[Round, int, Any]:
    """This round's `Round`, the number of devices the deadline dropped, and the compute times (latency model)."""
    n = fed.devices.num_devices
    if env.faults is not None:
        part = env.faults.participation(number)
        members, online, leaders_up = part.members, part.online, part.leaders_up
    else:
        members, online, leaders_up = torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool), None
    compute, dropped = None, 0
    if env.latency is not None:
        compute = env.latency.compute_time(number)
        upload = codec.framed(codec.encoded_size(ctx.dim, ctx.dim, ctx.payload_dtype, sparse=False))
        late = env.latency.drop_late(compute, online, int(upload))
        dropped, online = int(late.sum()), online & ~late
    participants = fed.algorithm.sampler.participants(ctx, number, online)
    return Round(number, members, online, participants, leaders_up), dropped, compute


def _complete(env: RoundEnv, values: torch.Tensor) -> torch.Tensor:
    """Per-row values as the whole federation has them (in a distributed run, each from its device's process)."""
    return values if env.shard is None else env.shard.complete(values)


def _hosted(env: RoundEnv) -> torch.Tensor | None:
    """The rows this process evaluates (None: all; a distributed run: the devices it hosts)."""
    return None if env.shard is None else torch.nonzero(env.shard.local).flatten()


def run_round(fed: Federation, ctx: RunContext, trainer: SequentialTrainer | BatchedTrainer, timer: RoundTimer,
              evaluate: bool = True, env: RoundEnv | None = None) -> dict[str, object]:
    """Advance `fed` by one round; returns that round's metrics."""
    env = env or RoundEnv()
    algorithm, devices, ledger = fed.algorithm, fed.devices, ctx.transport.ledger
    fed.round += 1
    ledger.begin_round()
    rnd, dropped, compute = _participation(fed, ctx, env, fed.round)
    started = time.perf_counter()
    algorithm.combiner.distribute(devices, ctx, rnd)
    started = timer.add("combine", started)

    rows = ctx.by_id(torch.nonzero(rnd.participants).flatten())
    trained = rows if env.shard is None else env.shard.mine(rows)  # a process trains the devices it hosts
    penalty = algorithm.combiner.penalty(devices, ctx, rnd, fed.inbox)
    generators = ctx.streams.device_generators("train", ctx.ids[trained], fed.round)
    dp = {"dp": env.dp_sgd} if env.dp_sgd is not None else {}
    losses = (trainer.train_all(devices.bank, devices.masks, devices.momentum, trained, penalty, generators, **dp)
              if len(trained) else torch.zeros(0))
    if env.shard is not None:  # every participant's loss, from the process that trained it
        by_row = torch.zeros(len(ctx.ids), dtype=torch.float64)  # one dtype on every process, exact for both
        by_row[trained] = losses.to(torch.float64)
        losses = env.shard.complete(by_row)[rows]
    losses = losses.tolist()
    if env.dp_sgd is not None and env.dp_schedule is not None and ctx.privacy is not None and len(rows):
        rates, steps = env.dp_schedule
        ctx.privacy.record(rows, env.dp_sgd.noise_multiplier, rates[rows], steps[rows])
    started = timer.add("train", started)

    if algorithm.pruner is not None:
        val = torch.nan_to_num(trainer.evaluate_all(devices.bank, "val", rows=_hosted(env))[0], nan=0.0)
        algorithm.pruner.step(devices, ctx, rnd, val)
        if env.shard is not None:  # a receiver learns the version of the mask it receives with it (see docs)
            devices.mask_version = env.shard.complete(devices.mask_version)
    started = timer.add("prune", started)

    if algorithm.selector is not None:  # without one, nobody ever has neighbours (fed.neighbours stays empty)
        fed.neighbours = algorithm.selector.select(devices, ctx, rnd)
        started = timer.add("select", started)
        fed.inbox = fed.exchange.exchange(devices, ctx, fed.round, fed.neighbours, algorithm.selector.pulls)
        algorithm.selector.observe(devices, ctx, rnd, fed.inbox)
        started = timer.add("exchange", started)
    algorithm.combiner.combine(devices, ctx, rnd, fed.inbox)
    started = timer.add("combine", started)

    if env.shard is not None:  # the federation's ledger: every process's messages
        ledger = env.shard.ledger(ledger)
    by_link = ledger.bytes_by_link
    metrics: dict[str, object] = {
        "round": fed.round,
        "algorithm": algorithm.name,
        "loss_mean": sum(losses) / len(losses) if losses else None,  # None: nobody trained
        "bytes_round": ledger.round_total,
        "bytes_total": ledger.total,
        "bytes_by_link": dict(by_link),
        "neighbours_mean": float(_complete(env, fed.neighbours.sum(dim=1)).float().mean()) if algorithm.selector
        else 0.0,
        "density_mean": float(_complete(env, density(devices.masks))[ctx.by_id(torch.arange(len(ctx.ids)))].mean()),
        "participants": int(rnd.participants.sum()),
        "bytes_edge_total": by_link[Link.DEVICE_EDGE.value],
        "bytes_backhaul_total": by_link[Link.DEVICE_SERVER.value] + by_link[Link.EDGE_CLOUD.value],
    }
    if ctx.privacy is not None:  # ε so far (the largest over devices), unless the run releases more than it covers
        metrics["epsilon"] = None if ctx.privacy.assumption_broken else ctx.privacy.epsilon()
    if env.faults is not None and env.faults.enabled:
        metrics["members"] = int(rnd.members.sum())
        metrics["online"] = int(rnd.online.sum()) + dropped
        if rnd.leaders_up is not None:
            metrics["leaders_up"] = int(rnd.leaders_up.sum())
    if env.latency is not None and compute is not None:
        seconds = env.latency.round_time(compute, rnd.participants, ledger.device_sent, ledger.device_received,
                                         ledger.round_backhaul)
        fed.time_total += seconds
        metrics.update({"time_round": seconds, "time_total": fed.time_total, "stragglers_dropped": dropped})
    if evaluate:
        served = algorithm.combiner.served(devices, ctx, rnd)
        models = devices.bank if served is None else served
        accuracies = _complete(env, trainer.evaluate_all(models, "test", rows=_hosted(env))[0])
        fed.accuracies = accuracies
        members = ctx.by_id(torch.nonzero(rnd.members).flatten())
        member_acc = [a for a in accuracies[members].tolist() if not math.isnan(a)]  # NaN: no test samples
        metrics["accuracy_mean"] = sum(member_acc) / len(member_acc) if member_acc else None
        metrics["accuracy_p10"] = percentile(member_acc, 0.10)
        # The same models on each device's validation split (what tuning may read; the test metrics are for reports)
        val = _complete(env, trainer.evaluate_all(models, "val", rows=_hosted(env))[0])
        member_val = [a for a in val[members].tolist() if not math.isnan(a)]  # NaN: no validation samples
        metrics["val_accuracy_mean"] = sum(member_val) / len(member_val) if member_val else None
    timer.add("evaluate", started)
    return metrics
