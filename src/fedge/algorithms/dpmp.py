"""DPMP: DPMN's adaptive pruning and regularized objective, but neighbours fixed on the same k-regular topology as
`dfl` (isolates the effect of similarity-based neighbour selection)."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import FixedTopology
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("dpmp", "adaptive pruning and regularizer, fixed topology")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("dpmp", pruner=AdaptivePruner(config.pruning), selector=FixedTopology(),
                     combiner=NeighbourRegularizer(config.regularizer))
