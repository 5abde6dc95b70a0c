"""hfl (HierFAVG) and fedavg with sampling: equivalence with fedavg, a hand-computed two-level average, leader
failure re-attachment, similarity clustering and the backhaul saving — all over messages."""

from __future__ import annotations

import torch

from fedge.algorithms.components.hierarchy import EdgeCloudAveraging, similarity_clusters
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.config import build
from fedge.core import codec
from fedge.experiment import ExperimentConfig, HierarchyConfig, ServerConfig
from fedge.messaging import Inbox
from fedge.runtimes.simulator import simulate

TINY = {"rounds": 3, "data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1}}


def tiny(**changes: object) -> ExperimentConfig:
    return build(ExperimentConfig, {**TINY, **changes})


def dense(d: int) -> int:
    """Bytes of one dense fp32 model message, frame included."""
    return int(codec.framed(codec.encoded_size(d, d, sparse=False)))


def test_hfl_with_one_cluster_and_kappa2_1_is_fedavg() -> None:
    for faults in ({}, {"device_failure": 0.3}):
        config = tiny(rounds=2, hierarchy={"clusters": 1, "kappa2": 1}, faults=faults)
        flat, hier = simulate(config, "fedavg", None), simulate(config, "hfl", None)
        torch.testing.assert_close(hier.state.algorithm.combiner.models[0], flat.state.algorithm.combiner.model,
                                   rtol=1e-5, atol=1e-6)
        for a, b in zip(flat.history, hier.history, strict=True):
            assert a["participants"] == b["participants"] > 0
            assert abs(a["accuracy_mean"] - b["accuracy_mean"]) < 1e-6
            # The same device traffic, but to the edge leader; the edge model goes up and down the backhaul.
            assert b["bytes_edge_total"] == a["bytes_backhaul_total"] == a["bytes_total"]
        size = dense(flat.summary["model_parameters"])
        assert hier.summary["bytes_backhaul_total"] == 2 * 2 * size


def _edge_cloud(assignment: list[int], sizes: list[int], reattach: str = "nearest"
                ) -> tuple[EdgeCloudAveraging, DeviceState, RunContext]:
    n = len(assignment)
    config = HierarchyConfig(clusters=2, kappa2=2, clustering="assignment", assignment=assignment, reattach=reattach)
    ctx = RunContext.standalone(n, 3, data_sizes=torch.tensor(sizes))
    devices = DeviceState.create(torch.zeros(3), n)
    combiner = EdgeCloudAveraging(config, ServerConfig())
    combiner.start(ctx, devices)
    return combiner, devices, ctx


def _round(number: int, n: int, leaders_up: torch.Tensor | None = None) -> Round:
    everyone = torch.ones(n, dtype=torch.bool)
    return Round(number, everyone, everyone, everyone, leaders_up)


def test_two_level_average_matches_hand_computation() -> None:
    combiner, devices, ctx = _edge_cloud([0, 0, 1, 1], [1, 3, 2, 2])
    ledger, size = ctx.transport.ledger, dense(3)
    nothing = Inbox.empty(3)

    rnd = _round(1, 4)  # an edge round: each leader averages its own devices' uploads, weighted by data size
    combiner.distribute(devices, ctx, rnd)
    devices.bank = torch.tensor([[4.0, 0, 0], [0, 4, 0], [2, 2, 2], [0, 0, 6]])
    combiner.combine(devices, ctx, rnd, nothing)
    edge0, edge1 = torch.tensor([1.0, 3.0, 0.0]), torch.tensor([1.0, 1.0, 4.0])  # (1·x0 + 3·x1)/4, (x2 + x3)/2
    torch.testing.assert_close(combiner.served(devices, ctx, rnd), torch.stack([edge0, edge0, edge1, edge1]))
    assert ledger.bytes_by_link["device-edge"] == 4 * size and ledger.total == 4 * size  # x0 held: no download

    rnd = _round(2, 4)  # a cloud round: downloads of the edge models, then the leaders' averages (4 and 4)
    combiner.distribute(devices, ctx, rnd)
    assert torch.equal(devices.bank, torch.stack([edge0, edge0, edge1, edge1]))
    devices.bank = torch.tensor([[8.0, 0, 0], [0, 0, 0], [0, 4, 0], [0, 4, 8]])
    combiner.combine(devices, ctx, rnd, nothing)
    edge0, edge1 = torch.tensor([2.0, 0, 0]), torch.tensor([0.0, 4, 4])
    cloud = (4 * edge0 + 4 * edge1) / 8
    torch.testing.assert_close(combiner.served(devices, ctx, rnd), cloud.expand(4, 3))
    assert ledger.bytes_by_link["device-edge"] == (4 + 4 + 4) * size
    assert ledger.bytes_by_link["edge-cloud"] == 2 * 2 * size  # two edge models up, the global model down to both


def test_failed_leader_devices_reattach_or_fall_back_to_the_cloud() -> None:
    size = dense(3)
    bank = torch.tensor([[4.0, 0, 0], [0, 4, 0], [2, 2, 2], [0, 0, 6]])
    for reattach in ("nearest", "cloud"):
        combiner, devices, ctx = _edge_cloud([0, 0, 1, 1], [1, 1, 1, 1], reattach)
        rnd = _round(1, 4, torch.tensor([True, False]))
        combiner.distribute(devices, ctx, rnd)
        devices.bank = bank.clone()
        combiner.combine(devices, ctx, rnd, Inbox.empty(3))
        served, ledger = combiner.served(devices, ctx, rnd), ctx.transport.ledger
        if reattach == "nearest":  # devices 2, 3 join leader 0 for the round: one average of all four
            torch.testing.assert_close(served, bank.mean(dim=0).expand(4, 3))
            assert ledger.bytes_by_link["device-edge"] == 4 * size and ledger.bytes_by_link["device-server"] == 0
        else:  # devices 2, 3 talk to the cloud directly, which averages them for this edge round
            torch.testing.assert_close(served[2:], bank[2:].mean(dim=0).expand(2, 3))
            torch.testing.assert_close(served[:2], bank[:2].mean(dim=0).expand(2, 3))
            assert ledger.bytes_by_link["device-edge"] == 2 * size and ledger.bytes_by_link["device-server"] == 2 * size


def test_similarity_clustering_recovers_planted_groups() -> None:
    g = torch.Generator().manual_seed(0)
    directions = torch.eye(8)[:2] * 5
    updates = torch.cat([directions[0] + 0.1 * torch.randn(5, 8, generator=g),
                         directions[1] + 0.1 * torch.randn(5, 8, generator=g)])
    clusters = similarity_clusters(updates, torch.ones_like(updates, dtype=torch.bool), 2)
    assert len(set(clusters[:5].tolist())) == 1 and len(set(clusters[5:].tolist())) == 1
    assert clusters[0] != clusters[5]


def test_similarity_clustering_runs_and_pays_for_its_uploads() -> None:
    config = tiny(rounds=2, hierarchy={"clusters": 2, "kappa2": 2, "clustering": "similarity"})
    result = simulate(config, "hfl", None)
    size = dense(result.summary["model_parameters"])
    # 6 updates uploaded once for clustering, then one cloud round with (at most) 2 leaders up and down
    assert result.history[0]["bytes_by_link"]["device-server"] == 6 * size
    assert 6 * size < result.summary["bytes_backhaul_total"] <= (6 + 4) * size
    assert set(result.state.algorithm.combiner.cluster.tolist()) <= {0, 1}


def test_fedavg_client_sampling_fraction() -> None:
    config = tiny(rounds=3, server={"sample_fraction": 0.5})
    result = simulate(config, "fedavg", None)
    size = dense(result.summary["model_parameters"])
    for metrics in result.history:
        assert metrics["participants"] == 3
        assert 3 * size <= metrics["bytes_round"] <= 2 * 3 * size  # uploads, and downloads for stale devices
    again = simulate(config, "fedavg", None)
    assert again.history == result.history


def test_uniform_weighting_differs_from_data_size_weighting() -> None:
    config = tiny(rounds=1, data={"devices": 6, "partition": "dirichlet:0.3"})
    sized = simulate(config, "fedavg", None).state.algorithm.combiner.model
    uniform = simulate(tiny(rounds=1, data={"devices": 6, "partition": "dirichlet:0.3"},
                            server={"weighting": "uniform"}), "fedavg", None).state.algorithm.combiner.model
    assert not torch.allclose(sized, uniform)
