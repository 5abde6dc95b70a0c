"""Named random streams of the caching simulation: numpy generators keyed by (seed, purpose, parts).

Every random draw of `fedge cache` comes from one stream of `fedge.core.streams`, named by what it is for and keyed
by the edge (and, where it applies, the drift block), never from seed arithmetic (`seed + 7919`, `seed * 1000 + e`)
or a global generator. A stream is a pure function of its key, so an edge's trace, exploration or initialisation
does not depend on how many edges there are or in which order they are built. The key derivation is
`fedge.core.streams.stream_key`; numpy generators are seeded with it because the simulator draws in numpy.

Purposes (parts in brackets):

| purpose | what it draws |
|---|---|
| `cache-trace-popularity` | the synthetic trace's global popularity ranking (a permutation of the catalogue) |
| `cache-trace-edge-shuffle` [edge] | the swaps that make an edge's ranking differ from the global one |
| `cache-trace-requests` | the synthetic trace's edge and Zipf rank of every request |
| `cache-trace-drift` [edge, block] | the swaps of popularity drift after each block of `drift_every` requests |
| `cache-edge-assignment` | the order in which MovieLens users are dealt to edges |
| `cache-embeddings` | the synthetic trace's clustered item vectors |
| `cache-accept` | one uniform per request: does the user accept the recommended item (shared by all policies) |
| `cache-random-eviction` [edge] | the `random` policy's victims |
| `cache-agent-init` [role, index] | a learned agent's network initialisation (the cloud's: the federated start) |
| `cache-agent-explore` [role, index] | ε-greedy draws of DQN, action sampling of SAC |
| `cache-agent-replay` [role, index] | replay minibatch indices |
"""

from __future__ import annotations

import numpy as np

from fedge.core.streams import stream_key


def numpy_stream(seed: int, purpose: str, *parts: int) -> np.random.Generator:
    """A fresh numpy generator for the stream (seed, purpose, *parts)."""
    return np.random.default_rng(stream_key(seed, purpose, *parts))


def acceptance_draws(seed: int, requests: int) -> np.ndarray:
    """One uniform in [0, 1) per request (float64): request t's user accepts a recommendation with p iff u[t] < p.
    Drawn once per run and shared by every policy (common random numbers); a prefix of a longer trace's draws."""
    return numpy_stream(seed, "cache-accept").random(requests)


__all__ = ["acceptance_draws", "numpy_stream"]
