"""DPMN (paper section III): adaptive pruning + cosine-similarity neighbour selection + saturating regularizer.

Each round, every device trains on f_i + λ·h_i with its neighbours' latest pruned models fixed, prunes adaptively,
picks S_i = {j : cos_ij ≥ δ} within [k_min, k_max], and receives x̃_j ∘ m_j from each neighbour as a sparse payload.
"""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import NeighbourRegularizer
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import SimilaritySelection
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("dpmn", "adaptive pruning, cosine-similarity neighbours, neighbour regularizer")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("dpmn", pruner=AdaptivePruner(config.pruning),
                     selector=SimilaritySelection(config.neighbours, "cosine"),
                     combiner=NeighbourRegularizer(config.regularizer))
