"""DPMN's similarity-based selection picks devices with the same classes; random selection does not."""

from __future__ import annotations

from benchmarks.neighbour_quality import class_sharing

from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import neighbour_ids, simulate


def test_dpmn_neighbours_share_classes_far_more_often_than_random() -> None:
    config = build(ExperimentConfig, {"rounds": 6, "data": {"devices": 20, "partition": "shards:2"}})
    setup = prepare(config)
    shares = {}
    for name in ("dpmn", "dpmn-r"):
        result = simulate(config, name, None, setup=setup)
        rounds = [neighbour_ids(result.extra["context"], result.state.neighbours)]
        shares[name], pair_share, edges = class_sharing(setup.data, rounds)
        assert edges >= 20  # every device has at least k_min = 1 neighbour
    assert shares["dpmn"] >= 0.8
    assert shares["dpmn-r"] < 0.7
    assert 0.3 < pair_share < 0.5
