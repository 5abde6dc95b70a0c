"""hfl: hierarchical FedAvg (HierFAVG, Liu et al. ICC 2020) with cluster leaders at edge servers (Lim et al.,
IEEE TPDS 2021): devices → edge leaders every round (κ1 = train.epochs local epochs between edge aggregations),
edge leaders → cloud every κ2 = hierarchy.kappa2 rounds. See fedge.algorithms.components.hierarchy and
docs/hierarchical.md."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ClientSampling
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("hfl", "hierarchical FedAvg: edge leaders every round, cloud every kappa2 rounds")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("hfl", sampler=ClientSampling(config.server),
                     combiner=EdgeCloudAveraging(config.hierarchy, config.server))
