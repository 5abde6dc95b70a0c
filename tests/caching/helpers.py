"""Small hand-made traces and models shared by the caching tests."""

from __future__ import annotations

import numpy as np

from fedge.caching.config import SoftHitConfig, TraceConfig
from fedge.caching.env import MultiEdgeCacheEnv, edge_cores
from fedge.caching.rng import acceptance_draws
from fedge.caching.similarity import SoftHitTable, synthetic_embeddings
from fedge.caching.simulator import CostModel
from fedge.caching.trace import Trace, synthetic_trace

MODEL = CostModel(w_sim=2.0, w_delay=0.1, w_miss=3.0, d_edge=1.0, d_neighbour=5.0, d_cloud=10.0, item_size_mb=2.0)


def make_trace(items: list[int], edges: list[int] | None = None, num_items: int | None = None) -> Trace:
    m = num_items if num_items is not None else max(items) + 1
    e = edges if edges is not None else [0] * len(items)
    return Trace(np.array(items, dtype=np.int64), np.array(e, dtype=np.int64), np.zeros(len(items), dtype=np.int64),
                 m, np.arange(m, dtype=np.int64), "hand")


def replay(policy: object, requests: list[int]) -> list[bool]:
    """Drive a policy directly (no soft hits); returns hit flags."""
    hits = []
    for t, k in enumerate(requests):
        if k in policy.cached:  # type: ignore[attr-defined]
            policy.hit(k, t)  # type: ignore[attr-defined]
            hits.append(True)
        else:
            policy.miss(k, t)  # type: ignore[attr-defined]
            hits.append(False)
    return hits


def small_env(edges: int = 2, items: int = 30, requests: int = 200, episodes: int = 2,
              capacity: int = 4) -> MultiEdgeCacheEnv:
    """A small synthetic multi-edge environment (`MultiEdgeCacheEnv`) for training tests; built fresh per call."""
    trace = synthetic_trace(TraceConfig(num_items=items, requests_per_episode=requests, episodes=episodes), edges, 0)
    emb = synthetic_embeddings(items, 8, 3, 0)
    table = SoftHitTable.build(emb, SoftHitConfig())
    u = acceptance_draws(0, len(trace))
    return MultiEdgeCacheEnv(lambda: edge_cores(trace, capacity, emb, table, MODEL, u, requests, edges, True, 10, 50),
                             True)
