"""The Flower benchmark's client (`benchmarks.flower_sim`), in an importable module so that each Ray worker keeps
the clients it has built: model and data are built once per client per worker, not on every `client_fn` call."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.client import NumPyClient

from benchmarks.workloads import BATCH_SIZE, LR, train_tensors
from fedge.models.vision import lenet5

_CLIENTS: dict[tuple[int, int, int], LeNetClient] = {}


class LeNetClient(NumPyClient):
    """One client: the bare loop's local epoch (`benchmarks.bare`) on its deterministic samples."""

    def __init__(self, client: int, seed: int, samples: int) -> None:
        self.client, self.seed, self.rounds = client, seed, 0
        self.net = lenet5((1, 28, 28), 10)
        self.x, self.y = train_tensors(seed, client, samples)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        with torch.no_grad():
            for p, w in zip(self.net.parameters(), parameters):
                p.copy_(torch.from_numpy(w))
        optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed + self.client))
        for first in range(0, len(self.y), BATCH_SIZE):
            batch = order[first:first + BATCH_SIZE]
            optimizer.zero_grad()
            F.cross_entropy(self.net(self.x[batch]), self.y[batch]).backward()
            optimizer.step()
        self.rounds += 1
        weights = [p.detach().numpy().copy() for p in self.net.parameters()]
        return weights, len(self.y), {"built": int(self.rounds == 1)}


def cached_client(client: int, seed: int, samples: int) -> LeNetClient:
    """This worker's client `client`, built on first use (one intra-op thread, as every contender per core)."""
    torch.set_num_threads(1)
    key = (client, seed, samples)
    if key not in _CLIENTS:
        _CLIENTS[key] = LeNetClient(client, seed, samples)
    return _CLIENTS[key]
