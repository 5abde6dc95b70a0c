"""DPMP: DPMN's adaptive pruning and regularized objective, but neighbours fixed on the same k-regular topology as
`dfl` (isolates the effect of similarity-based neighbour selection)."""

from __future__ import annotations

from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import FixedTopology


class DPMP:
    name = "dpmp"
    description = "adaptive pruning and regularizer, fixed topology"

    def __init__(self) -> None:
        self.pruner = AdaptivePruner()
        self.selector = FixedTopology()
        self.combiner = NeighbourRegularizer()
