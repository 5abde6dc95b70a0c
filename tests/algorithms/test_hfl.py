"""hfl (HierFAVG) and fedavg with sampling: equivalence with fedavg, a hand-computed two-level average, leader
failure re-attachment, similarity clustering and the backhaul saving."""

from __future__ import annotations

import torch

from fedge.algorithms.components.hierarchy import EdgeCloudAveraging, similarity_clusters
from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.config import build
from fedge.core.codec import encoded_size
from fedge.experiment import ExperimentConfig
from fedge.runtimes.simulator import simulate

TINY = {"rounds": 3, "data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1}}


def tiny(**changes: object) -> ExperimentConfig:
    return build(ExperimentConfig, {**TINY, **changes})


def small_context(config: ExperimentConfig, data_sizes: list[int], dim: int = 3) -> RunContext:
    n = len(data_sizes)
    return RunContext(config=config, dim=dim, layer_groups=[(0, dim)], prunable=torch.ones(dim, dtype=torch.bool),
                      head=(0, dim), topology=torch.zeros(n, n, dtype=torch.bool),
                      physical=torch.ones(n, n, dtype=torch.bool), target_density=torch.ones(n),
                      k_max=torch.ones(n, dtype=torch.long), data_sizes=torch.tensor(data_sizes),
                      val_sizes=torch.ones(n, dtype=torch.long), generator=torch.Generator().manual_seed(0))


def test_hfl_with_one_cluster_and_kappa2_1_is_fedavg() -> None:
    for faults in ({}, {"device_failure": 0.3}):
        config = tiny(rounds=2, hierarchy={"clusters": 1, "kappa2": 1}, faults=faults)
        flat, hier = simulate(config, "fedavg", None), simulate(config, "hfl", None)
        torch.testing.assert_close(hier["_state"].bank, flat["_state"].bank, rtol=1e-5, atol=1e-6)
        for a, b in zip(flat["_history"], hier["_history"]):
            assert a["participants"] == b["participants"] > 0
            assert abs(a["accuracy_mean"] - b["accuracy_mean"]) < 1e-6
        size = encoded_size(flat["model_parameters"], flat["model_parameters"], sparse=False)
        # The same device traffic, but to the edge leader; only the one edge model crosses the backhaul.
        assert hier["bytes_edge_total"] == flat["bytes_backhaul_total"] == flat["bytes_total"]
        assert hier["bytes_backhaul_total"] == 2 * 2 * size


def test_two_level_average_matches_hand_computation() -> None:
    config = tiny(data={"devices": 4}, hierarchy={"clusters": 2, "kappa2": 2, "clustering": "assignment",
                                                  "assignment": [0, 0, 1, 1]})
    ctx = small_context(config, [1, 3, 2, 2])
    state = FederationState.create(torch.zeros(3), 4)
    combiner = EdgeCloudAveraging()
    size = encoded_size(3, 3, sparse=False)

    state.round = 1  # an edge round: each leader averages its own devices, weighted by data size
    state.bank = torch.tensor([[4.0, 0, 0], [0, 4, 0], [2, 2, 2], [0, 0, 6]])
    moved = combiner.combine(state, ctx)
    edge0, edge1 = torch.tensor([1.0, 3.0, 0.0]), torch.tensor([1.0, 1.0, 4.0])  # (1·x0 + 3·x1)/4, (x2 + x3)/2
    torch.testing.assert_close(state.bank, torch.stack([edge0, edge0, edge1, edge1]))
    assert moved == state.bytes_edge_total == 4 * 2 * size and state.bytes_backhaul_total == 0

    state.round = 2  # a cloud round: the leaders' averages, weighted by their data (4 and 4)
    state.bank = torch.tensor([[8.0, 0, 0], [0, 0, 0], [0, 4, 0], [0, 4, 8]])
    combiner.combine(state, ctx)
    edge0, edge1 = torch.tensor([2.0, 0, 0]), torch.tensor([0.0, 4, 4])
    cloud = (4 * edge0 + 4 * edge1) / 8
    torch.testing.assert_close(state.bank, cloud.expand(4, 3))
    assert state.bytes_backhaul_total == 2 * 2 * size  # two edge models up, the global model down to both


def test_failed_leader_devices_reattach_or_fall_back_to_the_cloud() -> None:
    size = encoded_size(3, 3, sparse=False)
    bank = torch.tensor([[4.0, 0, 0], [0, 4, 0], [2, 2, 2], [0, 0, 6]])
    for reattach in ("nearest", "cloud"):
        config = tiny(data={"devices": 4}, hierarchy={"clusters": 2, "kappa2": 2, "clustering": "assignment",
                                                      "assignment": [0, 0, 1, 1], "reattach": reattach})
        ctx = small_context(config, [1, 1, 1, 1])
        state = FederationState.create(torch.zeros(3), 4)
        state.cluster = torch.tensor([0, 0, 1, 1])
        state.leader_up = torch.tensor([True, False])
        state.round, state.bank = 1, bank.clone()
        EdgeCloudAveraging().combine(state, ctx)
        if reattach == "nearest":  # devices 2, 3 join leader 0 for the round: one average of all four
            torch.testing.assert_close(state.bank, bank.mean(dim=0).expand(4, 3))
            assert state.bytes_edge_total == 4 * 2 * size and state.bytes_backhaul_total == 0
        else:  # devices 2, 3 talk to the cloud directly, which averages them for this edge round
            torch.testing.assert_close(state.bank[2:], bank[2:].mean(dim=0).expand(2, 3))
            torch.testing.assert_close(state.bank[:2], bank[:2].mean(dim=0).expand(2, 3))
            assert state.bytes_edge_total == 2 * 2 * size and state.bytes_backhaul_total == 2 * 2 * size


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
    size = encoded_size(result["_state"].bank.shape[1], result["_state"].bank.shape[1], sparse=False)
    # 6 updates uploaded once for clustering, then one cloud round with (at most) 2 leaders up and down
    assert 6 * size < result["bytes_backhaul_total"] <= (6 + 4) * size
    assert set(result["_state"].cluster.tolist()) <= {0, 1}


def test_fedavg_client_sampling_fraction() -> None:
    config = tiny(rounds=2, server={"sample_fraction": 0.5})
    result = simulate(config, "fedavg", None)
    size = encoded_size(result["_state"].bank.shape[1], result["_state"].bank.shape[1], sparse=False)
    for metrics in result["_history"]:
        assert metrics["participants"] == 3
        assert metrics["bytes_round"] == 2 * 3 * size
    bank = result["_state"].bank
    assert torch.equal(bank, bank[0].expand_as(bank))  # every member holds the global model
    again = simulate(config, "fedavg", None)
    assert again["_history"] == result["_history"]


def test_uniform_weighting_differs_from_data_size_weighting() -> None:
    config = tiny(rounds=1, data={"devices": 6, "partition": "dirichlet:0.3"})
    sized = simulate(config, "fedavg", None)["_state"].bank[0]
    uniform = simulate(tiny(rounds=1, data={"devices": 6, "partition": "dirichlet:0.3"},
                            server={"weighting": "uniform"}), "fedavg", None)["_state"].bank[0]
    assert not torch.allclose(sized, uniform)
