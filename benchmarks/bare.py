"""The practical limit: a bare PyTorch FedAvg loop with no framework (nn.Module + torch.optim.SGD).

Each round every client in turn loads the global weights, runs one local epoch of SGD (batch 32, shuffled) on its
own samples, and the server averages the client models weighted by sample count (McMahan et al. 2017).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.workloads import BATCH_SIZE, LR, train_tensors
from fedge.models.vision import lenet5


def bare_fedavg(clients: int, samples: int, rounds: int, seed: int) -> dict[str, float]:
    """Train `rounds` rounds; returns samples/s over the rounds (data creation excluded) and the seconds."""
    data = [train_tensors(seed, c, samples) for c in range(clients)]
    torch.manual_seed(seed)
    net = lenet5((1, 28, 28), 10)
    global_weights = [p.detach().clone() for p in net.parameters()]
    shuffle = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(rounds):
        total = [torch.zeros_like(p) for p in global_weights]
        for x, y in data:
            with torch.no_grad():
                for p, w in zip(net.parameters(), global_weights):
                    p.copy_(w)
            optimizer = torch.optim.SGD(net.parameters(), lr=LR)
            order = torch.randperm(len(y), generator=shuffle)
            for first in range(0, len(y), BATCH_SIZE):
                batch = order[first:first + BATCH_SIZE]
                optimizer.zero_grad()
                F.cross_entropy(net(x[batch]), y[batch]).backward()
                optimizer.step()
            with torch.no_grad():
                for t, p in zip(total, net.parameters()):
                    t.add_(p, alpha=len(y))
        global_weights = [t / (clients * samples) for t in total]
    seconds = time.perf_counter() - started
    return {"samples_per_s": rounds * clients * samples / seconds, "seconds": seconds}
