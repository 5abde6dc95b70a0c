"""Faults and simulated time: every algorithm survives them, schedules are seeded, the latency model's arithmetic."""

from __future__ import annotations

import torch

from fedge.algorithms import ALGORITHMS
from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.runtimes.faults import FaultModel
from fedge.runtimes.latency import LatencyModel
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import simulate

TINY = {"rounds": 3, "data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1},
        "pruning": {"ramp_rounds": 2}, "neighbours": {"k_max": 2, "bootstrap_probes": 3}}
HARSH = {"device_failure": 0.3, "exit_fraction": 0.2, "late_join_fraction": 0.2, "leader_failure": 0.3}


def tiny(**changes: object) -> ExperimentConfig:
    return build(ExperimentConfig, {**TINY, **changes})


def test_every_algorithm_finishes_under_faults_and_reports_participation() -> None:
    config = tiny(faults=HARSH, hierarchy={"clusters": 2, "kappa2": 2}, latency={"enabled": True})
    setup = prepare(config)
    faults = FaultModel.create(config.faults, config.seed, config.rounds, torch.arange(6), 2)
    results = {}
    for name in ALGORITHMS:
        result = results[name] = simulate(config, name, None, setup=setup)
        history = result.history
        assert len(history) == config.rounds
        for metrics in history:
            members = faults.members(metrics["round"])
            assert metrics["members"] == int(members.sum())
            assert 0 <= metrics["participants"] <= metrics["online"] <= metrics["members"]
            assert metrics["time_round"] >= 0
        assert sum(m["participants"] for m in history) < config.rounds * config.data.devices, name
        assert any(m["members"] < config.data.devices for m in history), name  # exits / late joins took effect
        assert bool(torch.isfinite(result.state.devices.bank).all()), name
        assert isinstance(history[-1]["accuracy_mean"], float)
    # The same device updates (seeded failures), far fewer bytes over the backhaul for hfl.
    flat, hier = results["fedavg"], results["hfl"]
    assert [m["participants"] for m in flat.history] == [m["participants"] for m in hier.history]
    assert 0 < hier.summary["bytes_backhaul_total"] < flat.summary["bytes_backhaul_total"]


def test_schedule_is_seeded_and_rounds_are_independent() -> None:
    config = tiny(rounds=10, data={"devices": 20}, faults=HARSH)
    ids = torch.arange(20)
    a, b = (FaultModel.create(config.faults, 0, 10, ids, 4) for _ in range(2))
    assert torch.equal(a.join_round, b.join_round) and torch.equal(a.exit_round, b.exit_round)
    assert int((a.join_round > 1).sum()) == 4 and int((a.exit_round <= 10).sum()) == 4
    for r in range(1, 11):
        members = a.members(r)
        assert torch.equal(members, (a.join_round <= r) & (a.exit_round > r))
    # The failures of round 5 do not depend on whether rounds 1-4 were drawn first (resumable without RNG state).
    for r in range(1, 6):
        first = a.participation(r)
    second = b.participation(5)
    assert torch.equal(first.online, second.online) and torch.equal(first.leaders_up, second.leaders_up)
    other = FaultModel.create(config.faults, 1, 10, ids, 4)
    assert not (torch.equal(other.join_round, a.join_round) and torch.equal(other.exit_round, a.exit_round))
    # A device's schedule and failures follow it wherever it is stored.
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    moved = FaultModel.create(config.faults, 0, 10, order, 4)
    assert torch.equal(moved.join_round, a.join_round[order])
    assert torch.equal(moved.participation(5).online, second.online[order])


def test_nobody_online_is_not_a_crash() -> None:
    config = tiny(rounds=2, faults={"device_failure": 0.99, "leader_failure": 0.99})
    seen = []
    for name in ("dpmn", "fedavg", "hfl"):
        history = simulate(config, name, None).history
        seen.append([m["participants"] for m in history])
        assert history[-1]["bytes_total"] >= 0 and "accuracy_mean" in history[-1]
    assert seen[0] == seen[1] == seen[2] and sum(seen[0]) <= 2  # the same seeded failures for every algorithm


def test_round_time_is_slowest_participant_plus_backhaul() -> None:
    config = tiny(latency={"enabled": True, "classes": [
        {"fraction": 0.5, "samples_per_second": 100, "uplink_mbps": 8, "downlink_mbps": 16},
        {"fraction": 0.5, "samples_per_second": 1000, "uplink_mbps": 80, "downlink_mbps": 160}],
        "backhaul_mbps": 8, "backhaul_rtt_s": 0.5})
    sizes = torch.tensor([100, 200, 300, 400, 500, 600])
    model = LatencyModel.create(config.latency, 0, torch.arange(6), sizes, epochs=1)
    compute = model.compute_time(1)
    torch.testing.assert_close(compute, sizes.float() / model.speed)  # epochs 1, no stragglers
    everyone = torch.ones(6, dtype=torch.bool)
    sent, received = torch.full((6,), 1e6), torch.full((6,), 2e6)
    expected = float((compute + sent / model.uplink + received / model.downlink).max())
    assert abs(model.round_time(compute, everyone, sent, received, 0) - expected) < 1e-6
    assert abs(model.round_time(compute, everyone, sent, received, 10**6) - (expected + 1.0 + 0.5)) < 1e-6
    assert model.round_time(compute, torch.zeros(6, dtype=torch.bool), sent, received, 0) == 0.0


def test_deadline_drops_stragglers() -> None:
    base = {"enabled": True, "straggler_probability": 0.5, "straggler_slowdown": 100.0}
    slow = simulate(tiny(rounds=2, latency=base), "fedavg", None).history
    fast = simulate(tiny(rounds=2, latency={**base, "deadline_s": 1.0}), "fedavg", None).history
    assert all(m["stragglers_dropped"] == 0 and m["participants"] == 6 for m in slow)
    assert sum(m["stragglers_dropped"] for m in fast) > 0
    for a, b in zip(slow, fast):
        assert b["participants"] == 6 - b["stragglers_dropped"]
        assert b["time_round"] <= 1.0 + 0.06 < a["time_round"]  # deadline + backhaul vs waiting for a straggler
