"""One edge server's cache as the learned agents see it: the serving loop, the request statistics and the observation.

Serving item k at edge e is the rule of `fedge.caching.simulator` (direct hit, soft hit, neighbour or cloud miss, the
same cost model); a decision is needed only when a miss finds the cache full. Observation [C + 1, 5]: one row per
cache slot plus a last row for the requested item, each with (log1p short-window request count, log1p long-window
count, recency exp(−Δt/short_window), cosine similarity to the edge's recent-interest vector (EMA of requested
items' embeddings), time in cache exp(−age/long_window)). Action in {0..C}: evict slot a and admit the requested
item, or C = do not admit it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from fedge.caching.similarity import SoftHitTable
from fedge.caching.simulator import CostModel

FEATURES = 5


class EdgeCore:
    """One edge server's cache and request statistics, stepping through its own request stream. With a heuristic
    policy attached (`attach`), the policy is told of every hit, soft hit and miss (with the request's global index)
    and decides fills itself; `decide` then applies the action that mirrors its choice (`fedge.caching.replay`)."""

    def __init__(self, capacity: int, items: np.ndarray, times: np.ndarray, accept_u: np.ndarray,
                 episode_bounds: list[tuple[int, int]], emb: np.ndarray, table: SoftHitTable, model: CostModel,
                 soft_enabled: bool, short_window: int, long_window: int) -> None:
        self.C, self.items, self.times, self.u = capacity, items.tolist(), times.tolist(), accept_u.tolist()
        self.bounds, self.table, self.model, self.soft_enabled = episode_bounds, table, model, soft_enabled
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.emb = (emb / np.maximum(norms, 1e-12)).astype(np.float32)
        self.sw, self.lw = short_window, long_window
        m = len(emb)
        self.slots: list[int] = []
        self.slot_of: dict[int, int] = {}
        self.admitted: list[int] = []
        self.short, self.long = np.zeros(m, np.float32), np.zeros(m, np.float32)
        self.last = np.full(m, -10**9, dtype=np.int64)
        self.short_q: deque[int] = deque()
        self.long_q: deque[int] = deque()
        self.interest = np.zeros(self.emb.shape[1], np.float32)
        self.pos, self.stop, self.pending, self.elapsed, self.last_loss = 0, 0, -1, 0, 0.0
        self.policy: Any = None
        self.reset_counters()

    def attach(self, policy: Any) -> None:
        """Let a heuristic policy (`fedge.caching.policies`) drive this cache; items it caches from the start (the
        static top-C) are loaded into the slots."""
        self.policy = policy
        for k in policy.cached:
            self._admit(int(k), len(self.slots))

    def reset_counters(self) -> None:
        self.direct = self.soft = self.neighbour = self.cloud = 0
        self.sim_loss, self.decisions = 0.0, 0

    def start_episode(self, episode: int) -> None:
        self.pos, self.stop = self.bounds[episode]
        self.pending = -1
        self.reset_counters()

    def _record(self, k: int) -> None:
        now = self.pos
        self.short[k] += 1
        self.long[k] += 1
        self.short_q.append(k)
        self.long_q.append(k)
        if len(self.short_q) > self.sw:
            self.short[self.short_q.popleft()] -= 1
        if len(self.long_q) > self.lw:
            self.long[self.long_q.popleft()] -= 1
        self.last[k] = now
        self.interest = 0.9 * self.interest + 0.1 * self.emb[k]

    def serve(self, neighbours: list[dict[int, int]]) -> float:
        """Serve this edge's next request and return its cost. Afterwards `pending` is the item when it missed with
        the cache full (a decision is needed), else −1; `last_loss` is 1 − s for a soft hit, else 0."""
        m, policy = self.model, self.policy
        k = self.items[self.pos]
        self._record(k)
        t = self.pos
        self.pos += 1
        self.last_loss = 0.0
        if k in self.slot_of:
            self.direct += 1
            if policy is not None:
                policy.hit(k, self.times[t])
            return m.request_cost("direct")
        if self.soft_enabled and self._soft(k, t):
            return m.request_cost("soft", self._last_sim)
        if any(k in other for other in neighbours):
            self.neighbour += 1
            cost = m.request_cost("neighbour")
        else:
            self.cloud += 1
            cost = m.request_cost("cloud")
        if policy is not None:
            policy.miss(k, self.times[t])
        if len(self.slots) < self.C:
            if policy is None or k in policy.cached:
                self._admit(k, len(self.slots))
        else:
            self.pending = k
            self.decisions += 1
        return cost

    def advance(self, neighbours: list[dict[int, int]]) -> float:
        """Serve requests until one needs a decision (then `pending` is its item) or the episode ends (pending −1).
        Returns the summed cost of the requests served; `elapsed` is how many there were."""
        cost, begin = 0.0, self.pos
        self.pending = -1
        while self.pos < self.stop:
            cost += self.serve(neighbours)
            if self.pending >= 0:
                break
        self.elapsed = self.pos - begin
        return cost

    def _soft(self, k: int, t: int) -> bool:
        tab = self.table
        for i, j in enumerate(tab.items[k]):
            if j in self.slot_of:
                if self.u[t] < tab.probs[k][i]:
                    self._last_sim = tab.sims[k][i]
                    self.last_loss = 1.0 - self._last_sim
                    self.soft += 1
                    self.sim_loss += self.last_loss
                    if self.policy is not None:
                        self.policy.soft(j, self._last_sim, self.times[t])
                    return True
                return False
        return False

    def _admit(self, k: int, slot: int) -> None:
        if slot == len(self.slots):
            self.slots.append(k)
            self.admitted.append(self.pos)
        else:
            del self.slot_of[self.slots[slot]]
            self.slots[slot] = k
            self.admitted[slot] = self.pos
        self.slot_of[k] = slot

    def decide(self, action: int) -> None:
        """Apply an action to the pending miss: evict slot `action` for it, or (action == C) bypass it."""
        if not 0 <= action <= self.C:
            raise ValueError(f"action {action} outside 0..{self.C}")
        if action < self.C and self.pending >= 0:
            self._admit(self.pending, action)
        self.pending = -1

    def observation(self) -> np.ndarray:
        rows = np.array(self.slots + [max(self.pending, 0)], dtype=np.int64)
        obs = np.empty((self.C + 1, FEATURES), dtype=np.float32)
        if len(rows) < self.C + 1:  # not full yet (only before the first decision)
            obs[:] = 0.0
            return obs
        obs[:, 0] = np.log1p(self.short[rows])
        obs[:, 1] = np.log1p(self.long[rows])
        obs[:, 2] = np.exp(-np.minimum(self.pos - self.last[rows], 10**6) / self.sw)
        obs[:, 3] = self.emb[rows] @ self.interest / max(float(np.linalg.norm(self.interest)), 1e-12)
        obs[:self.C, 4] = np.exp(-(self.pos - np.array(self.admitted)) / self.lw)
        obs[self.C, 4] = 0.0
        return obs

    def metrics(self) -> dict[str, float]:
        requests = self.direct + self.soft + self.neighbour + self.cloud
        out = self.model.summarise(requests, self.direct, self.soft, self.neighbour, self.cloud, self.sim_loss)
        out["decisions"] = self.decisions
        return out


def edge_cores(trace: Any, capacity: int, emb: np.ndarray, table: SoftHitTable, model: CostModel,
               accept_u: np.ndarray, episode_len: int, edges: int, soft_enabled: bool, short_window: int,
               long_window: int) -> list[EdgeCore]:
    """One EdgeCore per edge over that edge's sub-stream; episode i covers global requests [i·L, (i+1)·L)."""
    n = len(trace.items)
    cores = []
    for e in range(edges):
        idx = np.flatnonzero(trace.edges == e)
        cuts = np.searchsorted(idx, np.arange(0, n + episode_len, episode_len))
        bounds = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)][: math.ceil(n / episode_len)]
        cores.append(EdgeCore(capacity, trace.items[idx], idx, accept_u[idx], bounds, emb, table, model,
                              soft_enabled, short_window, long_window))
    return cores
