"""DFL: decentralized FedAvg in the D-PSGD style (Lian et al. 2017): local SGD, then uniform averaging of dense
models with the neighbours of a fixed random k-regular topology (k = neighbours.k_max). No masks."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import NeighbourAveraging
from fedge.algorithms.components.selection import FixedTopology
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("dfl", "decentralized averaging on a fixed k-regular topology")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("dfl", selector=FixedTopology(), combiner=NeighbourAveraging())
