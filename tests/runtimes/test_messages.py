"""Issue 13's acceptance for `fedge run`: every exchange is a message.

1. The loopback transport (every message encoded to bytes and decoded) writes the same metrics.jsonl, byte for
   byte, as the direct one, for every algorithm, with faults and latency on for fedavg, hfl and dpmn.
2. The ledger equals the lengths of the bytes that crossed the loopback transport, per link kind and round,
   including rounds where receivers already hold the sender's mask.
3. Storing the devices in another order changes nothing: the same metrics, per-device accuracies and neighbours.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch

from fedge.algorithms import ALGORITHMS
from fedge.config import build
from fedge.core import codec
from fedge.experiment import ExperimentConfig
from fedge.messaging import Kind, LoopbackTransport, Role, link_of
from fedge.messaging.transport import TRANSPORTS
from fedge.runtimes.simulator import neighbour_ids, simulate

BASE = {"rounds": 4, "data": {"devices": 8}, "train": {"epochs": 1}, "pruning": {"ramp_rounds": 2},
        "neighbours": {"k_max": 3, "bootstrap_probes": 4}, "hierarchy": {"clusters": 2}}
FAULTY = {"faults": {"device_failure": 0.2, "leader_failure": 0.3, "exit_fraction": 0.2, "late_join_fraction": 0.2},
          "latency": {"enabled": True, "straggler_probability": 0.3, "deadline_s": 0.5}}
CASES = [(name, False) for name in sorted(ALGORITHMS.names())] + [(name, True) for name in ("fedavg", "hfl", "dpmn")]


def config(transport: str = "direct", faulty: bool = False, **changes: object) -> ExperimentConfig:
    return build(ExperimentConfig, {**BASE, **(FAULTY if faulty else {}), "runtime": {"transport": transport},
                                    **changes})


@pytest.mark.parametrize(("name", "faulty"), CASES)
def test_loopback_writes_the_same_metrics_as_direct(tmp_path: Path, name: str, faulty: bool) -> None:
    for transport in ("direct", "loopback"):
        simulate(config(transport, faulty), name, tmp_path / transport)
    direct = (tmp_path / "direct" / "metrics.jsonl").read_bytes()
    assert direct == (tmp_path / "loopback" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "direct" / "neighbours.jsonl").read_bytes() == \
        (tmp_path / "loopback" / "neighbours.jsonl").read_bytes()


class Watched(LoopbackTransport):
    """The loopback transport, noting the length, link, round and kind of every message that crosses it."""

    seen: list[tuple[int, str, int, int, int]] = []

    def carry(self, message: bytes) -> bytes:
        frame, body = codec.unframe(message)
        link = link_of(Role(frame.sender_role), Role(frame.receiver_role)).value
        layout = codec.layout_of(body) if frame.kind in (Kind.MODEL, Kind.DOWNLOAD) else -1
        Watched.seen.append((frame.round, link, frame.kind, layout, len(message)))
        return message


@pytest.mark.parametrize("name", sorted(ALGORITHMS.names()))
def test_ledger_equals_the_bytes_that_crossed(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(TRANSPORTS, "loopback", Watched)
    Watched.seen = []
    history = simulate(config("loopback", faulty=name in ("fedavg", "hfl", "dpmn")), name, None).history
    crossed: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for round_number, link, _, _, length in Watched.seen:
        crossed[round_number][link] += length
    previous: dict[str, int] = defaultdict(int)
    for metrics in history:
        by_link = metrics["bytes_by_link"]
        this_round = {link: by_link[link] - previous[link] for link in by_link if by_link[link] != previous[link]}
        assert this_round == dict(crossed[metrics["round"]]), (name, metrics["round"])
        assert metrics["bytes_round"] == sum(this_round.values())
        previous = defaultdict(int, by_link)
    assert history[-1]["bytes_total"] == sum(length for *_, length in Watched.seen)
    if name == "local":
        assert not Watched.seen
    if name in ("dpmn", "dpmp", "dpmn-r"):  # pruned models: a receiver that holds the mask gets values only
        cached = [r for r, _, kind, layout, _ in Watched.seen if kind == Kind.MODEL and layout == codec.CACHED]
        sparse = [r for r, _, kind, layout, _ in Watched.seen if kind == Kind.MODEL and
                  layout in (codec.BITMAP, codec.INDEX)]
        assert cached and min(cached) >= 2 and sparse
    if name in ("dpmn", "dpmn-r", "dpcg"):  # the neighbour-selection handshake is counted
        kinds = {kind for _, _, kind, _, _ in Watched.seen}
        assert {Kind.REQUEST, Kind.PROBE, Kind.MODEL} <= kinds


PERMUTED = [(name, faulty) for name in ("dpmn", "dfl", "fedavg", "hfl") for faulty in (False, True)]


@pytest.mark.parametrize(("name", "faulty"), PERMUTED)
def test_storage_order_changes_nothing(name: str, faulty: bool) -> None:
    cfg = config("direct", faulty, server={"sample_fraction": 0.75})
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))  # device order[r] lives in row r
    plain, permuted = simulate(cfg, name, None), simulate(cfg, name, None, device_order=order)
    assert plain.history == permuted.history

    def by_device(result: object) -> tuple[torch.Tensor, list[list[int]]]:
        ctx = result.extra["context"]
        rows = ctx.rows_of(torch.arange(8))
        return result.state.accuracies[rows], neighbour_ids(ctx, result.state.neighbours)

    (acc_a, nb_a), (acc_b, nb_b) = by_device(plain), by_device(permuted)
    assert torch.equal(acc_a, acc_b) and nb_a == nb_b
    if name == "dpmn":
        assert any(nb_a)


def test_storage_order_changes_nothing_for_batched_training() -> None:
    cfg = build(ExperimentConfig, {**BASE, "rounds": 3, "data": {"devices": 12, "dataset": "synthetic"},
                                   "train": {"model": "mlp", "epochs": 1}})
    assert cfg.train.batched == "auto"
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    plain, permuted = simulate(cfg, "dpmn", None), simulate(cfg, "dpmn", None, device_order=order)
    assert plain.history == permuted.history
