"""The request-serving loop for heuristic policies, and the cost model every policy is scored by.

Serving request t (item k at edge e): a direct hit if k is cached at e; otherwise the recommender offers the cached
item k' most similar to k (scanning k's top-K similar items, best first) and the user accepts with probability
p(s(k, k')) — a soft hit; otherwise a miss, served by a neighbour edge that caches k (with cooperation) or by the
cloud, and the policy may admit k. The per-request system cost (Sun et al., IEEE JSAC 2023) is

    cost = w_sim·(1 − s)·[soft hit] + w_delay·delay_ms + w_miss·[miss].

Acceptance draws are one uniform number per request shared by all policies (common random numbers), so policies
are compared on identical luck. The loop uses only plain Python lists/dicts and counters; costs are summed from the
counts at the end of each episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.caching.config import CostConfig, NetworkConfig
from fedge.caching.policies import (
    FIFO,
    LFU,
    LRU,
    Belady,
    DecayedLFU,
    RandomEviction,
    SimilarityLFU,
    StaticTop,
    next_use,
)
from fedge.caching.rng import numpy_stream
from fedge.caching.similarity import SoftHitTable
from fedge.caching.trace import Trace


@dataclass(frozen=True)
class CostModel:
    """Per-outcome delays (ms) and the cost weights."""

    w_sim: float
    w_delay: float
    w_miss: float
    d_edge: float
    d_neighbour: float
    d_cloud: float
    item_size_mb: float

    @classmethod
    def from_config(cls, cost: CostConfig, net: NetworkConfig) -> CostModel:
        return cls(cost.w_sim, cost.w_delay, cost.w_miss, net.delay_edge_ms, net.delay_neighbour_ms,
                   net.delay_cloud_ms, net.item_size_mb)

    def request_cost(self, outcome: str, s: float = 1.0) -> float:
        """Cost of one request: outcome is 'direct', 'soft' (with similarity s), 'neighbour' or 'cloud'."""
        if outcome == "direct":
            return self.w_delay * self.d_edge
        if outcome == "soft":
            return self.w_sim * (1.0 - s) + self.w_delay * self.d_edge
        delay = self.d_neighbour if outcome == "neighbour" else self.d_cloud
        return self.w_delay * delay + self.w_miss

    def summarise(self, requests: int, direct: int, soft: int, neighbour: int, cloud: int,
                  sim_loss: float) -> dict[str, float]:
        """Average cost/delay per request, hit ratios and backhaul (cloud fetches × item size) for one episode."""
        n = max(requests, 1)
        cost = (direct * self.request_cost("direct") + soft * self.w_delay * self.d_edge + self.w_sim * sim_loss
                + neighbour * self.request_cost("neighbour") + cloud * self.request_cost("cloud"))
        delay = (direct + soft) * self.d_edge + neighbour * self.d_neighbour + cloud * self.d_cloud
        return {"requests": requests, "cost": cost / n, "delay_ms": delay / n, "direct_hit_ratio": direct / n,
                "soft_hit_ratio": soft / n, "neighbour_ratio": neighbour / n, "cloud_ratio": cloud / n,
                "backhaul_mb": cloud * self.item_size_mb}


def make_policies(name: str, capacity: int, trace: Trace, edges: int, seed: int, half_life: int = 125) -> list[Any]:
    """One heuristic policy object per edge (`half_life`: the aging of `dlfu`, in requests at the edge)."""
    if name == "belady":
        nxt = next_use(trace.items, trace.edges)
        return [Belady(capacity, nxt) for _ in range(edges)]
    if name == "static":
        return [StaticTop(capacity, trace.items[trace.edges == e]) for e in range(edges)]
    if name == "random":
        return [RandomEviction(capacity, numpy_stream(seed, "cache-random-eviction", e)) for e in range(edges)]
    if name == "dlfu":
        return [DecayedLFU(capacity, half_life) for _ in range(edges)]
    simple = {"lru": LRU, "lfu": LFU, "fifo": FIFO, "sim-lfu": SimilarityLFU}
    return [simple[name](capacity) for _ in range(edges)]


def simulate(trace: Trace, policies: list[Any], table: SoftHitTable, model: CostModel, accept_u: np.ndarray,
             episode_len: int, cooperation: bool, soft_enabled: bool,
             on_episode: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Serve the whole trace with one policy object per edge; returns one metrics dict per episode."""
    items, edges, u = trace.items.tolist(), trace.edges.tolist(), accept_u.tolist()
    caches = [p.cached for p in policies]
    on_hit = [p.hit for p in policies]
    on_soft = [p.soft for p in policies]
    on_miss = [p.miss for p in policies]
    others = [[caches[o] for o in range(len(policies)) if o != e] if cooperation else [] for e in range(len(policies))]
    nb_items, nb_sims, nb_probs = table.items, table.sims, table.probs
    results = []
    for episode, start in enumerate(range(0, len(items), episode_len)):
        stop = min(len(items), start + episode_len)
        direct = soft = neighbour = cloud = 0
        sim_loss = 0.0
        for t in range(start, stop):
            k = items[t]
            e = edges[t]
            cached = caches[e]
            if k in cached:
                direct += 1
                on_hit[e](k, t)
                continue
            if soft_enabled:
                served = False
                for i, j in enumerate(nb_items[k]):
                    if j in cached:
                        if u[t] < nb_probs[k][i]:
                            s = nb_sims[k][i]
                            soft += 1
                            sim_loss += 1.0 - s
                            on_soft[e](j, s, t)
                            served = True
                        break
                if served:
                    continue
            found = False
            for other in others[e]:
                if k in other:
                    found = True
                    break
            if found:
                neighbour += 1
            else:
                cloud += 1
            on_miss[e](k, t)
        metrics = model.summarise(stop - start, direct, soft, neighbour, cloud, sim_loss)
        metrics["episode"] = episode
        results.append(metrics)
        if on_episode is not None:
            on_episode(episode, metrics)
    return results
