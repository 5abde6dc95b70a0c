"""DPMN-R: DPMN with neighbours drawn uniformly at random, as many per device as DPMN's rule would select."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import RandomLikeSelection
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("dpmn-r", "DPMN with random neighbours")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("dpmn-r", pruner=AdaptivePruner(config.pruning), selector=RandomLikeSelection(config.neighbours),
                     combiner=NeighbourRegularizer(config.regularizer))
