"""DPCG: personalized training with the neighbour regularizer, no pruning, neighbours the k_max nearest by
Euclidean distance of their models (scored through the same probe mechanism as DPMN, bytes counted)."""

from __future__ import annotations

from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.selection import SimilaritySelection


class DPCG:
    name = "dpcg"
    description = "no pruning, k nearest neighbours by Euclidean distance, regularizer"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = SimilaritySelection("euclidean")
        self.combiner = NeighbourRegularizer()
