"""FedAvg (McMahan et al. 2017): client-server; each round the server samples a fraction C of the online devices
(`server.sample_fraction`, default 1: everyone), they train E local epochs, and the server averages their models
weighted by data size (`server.weighting`) and sends the average back (upload and download bytes counted)."""

from __future__ import annotations

import torch

from fedge.algorithms.components.combining import ClientSampling, ServerAveraging
from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState


class FedAvg:
    name = "fedavg"
    description = "client-server averaging weighted by data size, with client sampling"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = None
        self.combiner = ServerAveraging()
        self.sampling = ClientSampling()

    def participants(self, state: FederationState, ctx: RunContext, online: torch.Tensor) -> torch.Tensor:
        return self.sampling.participants(state, ctx, online)
