"""DPCG: personalized training with the neighbour regularizer, no pruning, neighbours the k_max nearest by
Euclidean distance of their models (scored through the same probe mechanism as DPMN, bytes counted)."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.selection import SimilaritySelection
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("dpcg", "no pruning, k nearest neighbours by Euclidean distance, regularizer")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("dpcg", selector=SimilaritySelection(config.neighbours, "euclidean"),
                     combiner=NeighbourRegularizer(config.regularizer))
