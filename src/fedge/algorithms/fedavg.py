"""FedAvg (McMahan et al. 2017): client-server; each round the server averages the devices' models weighted by
their data size and sends the average back (upload and download bytes counted)."""

from __future__ import annotations

from fedge.algorithms.components.combining import ServerAveraging


class FedAvg:
    name = "fedavg"
    description = "client-server averaging weighted by data size"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = None
        self.combiner = ServerAveraging()
