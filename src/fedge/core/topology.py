"""Physical/logical topologies as boolean [N, N] adjacency matrices (symmetric, no self loops)."""

from __future__ import annotations

import torch


def fully_connected(n: int) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool)


def ring(n: int) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    idx = torch.arange(n)
    adj[idx, (idx + 1) % n] = True
    adj[idx, (idx - 1) % n] = True
    adj.fill_diagonal_(False)
    return adj


def random_regular(n: int, k: int, generator: torch.Generator, max_tries: int = 200) -> torch.Tensor:
    """A uniformly drawn simple k-regular graph (pairing model with restarts); needs n·k even and k < n.

    When n·k is odd, one device gets degree k+1 so every device still has at least k neighbours.
    """
    if k <= 0:
        return torch.zeros(n, n, dtype=torch.bool)
    if k >= n - 1:
        return fully_connected(n)
    for _ in range(max_tries):
        stubs = torch.arange(n).repeat_interleave(k)
        if (n * k) % 2:
            stubs = torch.cat([stubs, torch.tensor([0])])
        stubs = stubs[torch.randperm(len(stubs), generator=generator)]
        a, b = stubs[0::2], stubs[1::2]
        if bool((a == b).any()):
            continue
        adj = torch.zeros(n, n, dtype=torch.bool)
        pairs = a * n + b
        if len(torch.unique(torch.minimum(a, b) * n + torch.maximum(a, b))) != len(pairs):
            continue
        adj[a, b] = True
        adj[b, a] = True
        return adj
    # Dense fallback that is still k-regular: a circulant graph with random relabelling.
    perm = torch.randperm(n, generator=generator)
    adj = torch.zeros(n, n, dtype=torch.bool)
    idx = torch.arange(n)
    for step in range(1, k // 2 + 1):
        adj[perm[idx], perm[(idx + step) % n]] = True
        adj[perm[(idx + step) % n], perm[idx]] = True
    if k % 2:
        adj[perm[idx], perm[(idx + n // 2) % n]] = True
        adj[perm[(idx + n // 2) % n], perm[idx]] = True
    adj.fill_diagonal_(False)
    return adj


TOPOLOGIES = ("full", "ring", "random-regular")


def build_topology(kind: str, n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "full":
        return fully_connected(n)
    if kind == "ring":
        return ring(n)
    if kind == "random-regular":
        return random_regular(n, k, generator)
    raise ValueError(f"unknown topology {kind!r} (choose from {', '.join(TOPOLOGIES)})")
