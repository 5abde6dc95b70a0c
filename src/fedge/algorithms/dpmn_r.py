"""DPMN-R: DPMN with neighbours drawn uniformly at random, as many per device as DPMN's rule would select."""

from __future__ import annotations

from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import RandomLikeSelection


class DPMNR:
    name = "dpmn-r"
    description = "DPMN with random neighbours"

    def __init__(self) -> None:
        self.pruner = AdaptivePruner()
        self.selector = RandomLikeSelection()
        self.combiner = NeighbourRegularizer()
