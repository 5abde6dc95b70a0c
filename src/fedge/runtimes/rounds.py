"""The round loop, written once for every algorithm and runtime.

One round on every live device (DPMN order, paper section III.C):
1. train: E local epochs on f_i (+ the combiner's penalty λ·∇h_i with the received models held fixed);
2. prune: the algorithm's pruner updates masks from local validation accuracy (if it has one);
3. select: the selector picks S_i and reports the bytes its scoring used;
4. exchange: each device receives x̃_j ∘ m_j from every j ∈ S_i as an encoded payload (bytes counted);
5. combine: the combiner uses what was received (regularizer references, neighbour averaging, server average);
6. evaluate: personalized accuracy of each device's model on its own test set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from fedge.algorithms.base import Algorithm
from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core.codec import encoded_size, encoded_sizes
from fedge.core.masks import density
from fedge.runtimes.faults import FaultModel
from fedge.runtimes.latency import LatencyModel
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer


@dataclass
class RoundTimer:
    """Seconds spent in each phase, accumulated over the run (for the benchmark's breakdown)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("train", "prune", "select", "exchange", "combine", "evaluate"), 0.0))

    def add(self, phase: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] += now - started
        return now


def exchange(state: FederationState, ctx: RunContext, adjacency: torch.Tensor) -> int:
    """Deliver each sender's encoded payload to its receivers; returns the bytes on the wire.

    The payload j sends i is `codec.encode(x̃_j, m_j, mask_known=...)`, where the mask is left out when i already
    holds j's current mask version; its length is `codec.encoded_sizes` (tested equal to the encoded length). The
    value received is x̃_j itself (fp32) or its fp16 rounding.
    """
    rows, cols = torch.nonzero(adjacency, as_tuple=True)
    held = state.mask_version_held[rows, cols].long() == state.mask_version[cols]
    senders = torch.unique(cols)  # sorted; only their rows are read or replaced below
    nnz = torch.zeros(state.num_devices, dtype=torch.int64)
    nnz[senders] = state.masks[senders].view(torch.uint8).sum(dim=1, dtype=torch.int64)
    sizes = encoded_sizes(nnz[cols], ctx.dim, ctx.config.payload_dtype, mask_known=held)
    state.mask_version_held[rows, cols] = state.mask_version[cols].to(torch.int32)
    values = state.bank[senders]
    state.references[senders] = values if ctx.config.payload_dtype == "fp32" else values.half().float()
    state.reference_masks[senders] = state.masks[senders]
    return int(sizes.sum())


def percentile(values: list[float], q: float) -> float:
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return float("nan")
    k = (len(finite) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return finite[lo] + (finite[hi] - finite[lo]) * (k - lo)


@dataclass
class RoundEnv:
    """Runtime models the loop consults each round besides the algorithm: faults and simulated time (both optional)."""

    faults: FaultModel | None = None
    latency: LatencyModel | None = None


def _traffic(state: FederationState, ctx: RunContext, adjacency: torch.Tensor | None, server_bytes: int,
             participants: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([N] bytes sent, [N] bytes received) per device this round, for the latency model."""
    sent, received = torch.zeros(state.num_devices), torch.zeros(state.num_devices)
    if adjacency is not None and bool(adjacency.any()):
        sizes = encoded_sizes(state.masks.sum(dim=1), ctx.dim, ctx.config.payload_dtype).to(torch.float32)
        a = adjacency.to(torch.float32)
        sent += a.sum(dim=0) * sizes
        received += a @ sizes
    if server_bytes > 0:  # client-server: each participant uploads its model and downloads the aggregate
        dense = float(encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False))
        sent += participants.to(torch.float32) * dense
        received += participants.to(torch.float32) * dense
    return sent, received


def run_round(state: FederationState, ctx: RunContext, algorithm: Algorithm,
              trainer: SequentialTrainer | BatchedTrainer, generator: torch.Generator, timer: RoundTimer,
              evaluate: bool = True, env: RoundEnv | None = None) -> dict[str, object]:
    """Advance `state` by one round; returns that round's metrics.

    Participation: the fault model (if any) sets who is in the federation (`state.alive`) and who is online; the
    latency model (if any) drops participants that would miss the deadline; the algorithm may sample among the
    rest (`participants`, e.g. FedAvg's fraction C). While the round runs, `state.alive` holds only the
    participants, so selectors, combiners and the pruner see exactly who takes part; it is restored afterwards.
    """
    env = env or RoundEnv()
    state.round += 1
    online = env.faults.begin_round(state, state.round) if env.faults else state.alive.clone()
    members = state.alive.clone()
    compute, dropped = None, 0
    if env.latency is not None:
        compute = env.latency.compute_time(state.round)
        dense = encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False)
        late = env.latency.drop_late(compute, online, dense)
        dropped, online = int(late.sum()), online & ~late
    choose = getattr(algorithm, "participants", None)
    active = choose(state, ctx, online) if choose is not None else online
    state.members, state.alive = members, active.clone()
    backhaul_before = state.bytes_backhaul_total
    try:
        started = time.perf_counter()
        devices = torch.nonzero(active).flatten()
        penalty = algorithm.combiner.penalty(state, ctx)
        losses = (trainer.train_all(state.bank, state.masks, state.momentum, devices, penalty, generator).tolist()
                  if len(devices) else [])
        started = timer.add("train", started)

        if algorithm.pruner is not None:
            val = torch.nan_to_num(trainer.evaluate_all(state.bank, "val")[0], nan=0.0)
            algorithm.pruner.step(state, ctx, val, active)
        started = timer.add("prune", started)

        round_bytes, adjacency = 0, None
        if algorithm.selector is not None:
            adjacency, scoring_bytes = algorithm.selector.select(state, ctx)
            started = timer.add("select", started)
            round_bytes += scoring_bytes + exchange(state, ctx, adjacency)
            state.neighbours = adjacency
            observe = getattr(algorithm.selector, "observe", None)
            if observe is not None:
                observe(state, ctx, adjacency)
            started = timer.add("exchange", started)
        server_bytes = algorithm.combiner.combine(state, ctx)
        round_bytes += server_bytes
        started = timer.add("combine", started)
    finally:
        state.alive = members
    state.bytes_total += round_bytes

    metrics: dict[str, object] = {
        "round": state.round,
        "algorithm": algorithm.name,
        "loss_mean": sum(losses) / max(len(losses), 1),
        "bytes_round": round_bytes,
        "bytes_total": state.bytes_total,
        "neighbours_mean": float(state.neighbours.sum(dim=1).float().mean()) if algorithm.selector else 0.0,
        "density_mean": float(density(state.masks).mean()),
        "participants": int(active.sum()),
        "bytes_edge_total": state.bytes_edge_total,
        "bytes_backhaul_total": state.bytes_backhaul_total,
    }
    if env.faults is not None and env.faults.enabled:
        metrics["members"] = int(members.sum())
        metrics["online"] = int(online.sum()) + dropped
        if state.leader_up is not None:
            metrics["leaders_up"] = int(state.leader_up.sum())
    if env.latency is not None and compute is not None:
        sent, received = _traffic(state, ctx, adjacency, server_bytes, active)
        seconds = env.latency.round_time(compute, active, sent, received,
                                         state.bytes_backhaul_total - backhaul_before)
        state.time_total += seconds
        metrics.update({"time_round": seconds, "time_total": state.time_total, "stragglers_dropped": dropped})
    if evaluate:
        accuracies = trainer.evaluate_all(state.bank, "test")[0].tolist()
        alive_acc = [a for a, ok in zip(accuracies, state.alive.tolist()) if ok]
        metrics["accuracy_mean"] = sum(alive_acc) / max(len(alive_acc), 1)
        metrics["accuracy_p10"] = percentile(alive_acc, 0.10)
    timer.add("evaluate", started)
    return metrics
