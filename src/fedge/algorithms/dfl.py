"""DFL: decentralized FedAvg in the D-PSGD style (Lian et al. 2017): local SGD, then uniform averaging of dense
models with the neighbours of a fixed random k-regular topology (k = neighbours.k_max). No masks."""

from __future__ import annotations

from fedge.algorithms.components.combining import NeighbourAveraging
from fedge.algorithms.components.selection import FixedTopology


class DFL:
    name = "dfl"
    description = "decentralized averaging on a fixed k-regular topology"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = FixedTopology()
        self.combiner = NeighbourAveraging()
