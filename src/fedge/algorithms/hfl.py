"""hfl: hierarchical FedAvg (HierFAVG, Liu et al. ICC 2020) with cluster leaders at edge servers (Lim et al.,
IEEE TPDS 2021): devices → edge leaders every round (κ1 = train.epochs local epochs between edge aggregations),
edge leaders → cloud every κ2 = hierarchy.kappa2 rounds. See fedge.algorithms.components.hierarchy and
docs/hierarchical.md."""

from __future__ import annotations

import torch

from fedge.algorithms.components.combining import ClientSampling
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState


class HFL:
    name = "hfl"
    description = "hierarchical FedAvg: edge leaders every round, cloud every kappa2 rounds"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = None
        self.combiner = EdgeCloudAveraging()
        self.sampling = ClientSampling()

    def participants(self, state: FederationState, ctx: RunContext, online: torch.Tensor) -> torch.Tensor:
        return self.sampling.participants(state, ctx, online)
