"""FedAvg (McMahan et al. 2017): client-server; each round the server samples a fraction C of the online devices
(`server.sample_fraction`, default 1: everyone), they download the server's model, train E local epochs and upload
their models, which the server averages weighted by data size (`server.weighting`)."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ClientSampling, ServerAveraging
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("fedavg", "client-server averaging weighted by data size, with client sampling")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("fedavg", sampler=ClientSampling(config.server), combiner=ServerAveraging(config.server))
