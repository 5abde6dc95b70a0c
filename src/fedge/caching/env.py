"""Reinforcement-learning environments: a Gymnasium env for one edge and a PettingZoo ParallelEnv for E edges.

Cache replacement is a (multi-agent) MDP as in Sun et al. (IEEE JSAC 2023). A decision is needed only when a
requested item misses and the cache is full, so an env step jumps from one such decision to the next (a semi-MDP):
hits, soft hits and misses while the cache still has room are served in between, and the step's reward is minus the
summed system cost of every request served since the previous decision, and `info["elapsed"]` is how many requests
that was, so learners can discount per request (γ^elapsed, a semi-MDP) rather than per decision — discounting per
decision would favour actions that cause more misses, since those make decisions (and discounting) more frequent.

Observation [C + 1, 5]: one row per cache slot plus a last row for the requested item, each with
(log1p short-window request count, log1p long-window count, recency exp(−Δt/short_window), cosine similarity to
the edge's recent-interest vector (EMA of requested items' embeddings), time in cache exp(−age/long_window)).
Action in {0..C}: evict slot a and admit the requested item, or C = do not admit it.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from fedge.caching.similarity import SoftHitTable
from fedge.caching.simulator import CostModel

FEATURES = 5


class EdgeCore:
    """One edge server's cache and request statistics, stepping through its own request stream."""

    def __init__(self, capacity: int, items: np.ndarray, times: np.ndarray, accept_u: np.ndarray,
                 episode_bounds: list[tuple[int, int]], emb: np.ndarray, table: SoftHitTable, model: CostModel,
                 soft_enabled: bool, short_window: int, long_window: int) -> None:
        self.C, self.items, self.times, self.u = capacity, items.tolist(), times, accept_u.tolist()
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
        self.pos, self.stop, self.pending, self.elapsed = 0, 0, -1, 0
        self.reset_counters()

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

    def advance(self, neighbours: list[dict[int, int]]) -> float:
        """Serve requests until one needs a decision (then `pending` is its item) or the episode ends (pending −1).
        Returns the summed cost of the requests served; `elapsed` is how many there were."""
        cost, m, begin = 0.0, self.model, self.pos
        while self.pos < self.stop:
            k = self.items[self.pos]
            self._record(k)
            t = self.pos
            self.pos += 1
            if k in self.slot_of:
                self.direct += 1
                cost += m.request_cost("direct")
                continue
            if self.soft_enabled and self._soft(k, t):
                cost += m.request_cost("soft", self._last_sim)
                continue
            if any(k in other for other in neighbours):
                self.neighbour += 1
                cost += m.request_cost("neighbour")
            else:
                self.cloud += 1
                cost += m.request_cost("cloud")
            if len(self.slots) < self.C:
                self._admit(k, len(self.slots))
            else:
                self.pending = k
                self.decisions += 1
                self.elapsed = self.pos - begin
                return cost
        self.pending = -1
        self.elapsed = self.pos - begin
        return cost

    def _soft(self, k: int, t: int) -> bool:
        tab = self.table
        for i, j in enumerate(tab.items[k]):
            if j in self.slot_of:
                if self.u[t] < tab.probs[k][i]:
                    self._last_sim = tab.sims[k][i]
                    self.soft += 1
                    self.sim_loss += 1.0 - self._last_sim
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


def _spaces(capacity: int, long_window: int) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    high = np.float32(max(1.0, math.log1p(long_window)))
    return (gym.spaces.Box(-1.0, high, shape=(capacity + 1, FEATURES), dtype=np.float32),
            gym.spaces.Discrete(capacity + 1))


class CacheEnv(gym.Env):
    """One edge server (misses go to the cloud). `reset(seed=...)` restarts the trace with an empty cache; a plain
    `reset()` moves on to the next episode of the trace with the cache kept warm (wrapping around at the end)."""

    metadata = {"render_modes": []}

    def __init__(self, make_core: Any) -> None:
        self.make_core = make_core
        self.core: EdgeCore = make_core()
        self.observation_space, self.action_space = _spaces(self.core.C, self.core.lw)
        self.episode = -1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or self.episode < 0:
            self.core, self.episode = self.make_core(), -1
        self.episode = (self.episode + 1) % len(self.core.bounds)
        self.core.start_episode(self.episode)
        self.core.advance([])
        return self.core.observation(), {"episode": self.episode}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.core.decide(int(action))
        cost = self.core.advance([])
        done = self.core.pending < 0
        info = {"elapsed": self.core.elapsed, **(self.core.metrics() if done else {})}
        return self.core.observation(), -cost, done, False, info


class MultiEdgeCacheEnv(ParallelEnv):
    """E edge servers acting in parallel (PettingZoo Parallel API). Each step every agent with a pending miss
    chooses an action; each edge then serves its own stream until its next decision. With cooperation a miss is
    served by any neighbour whose cache holds the item at that moment."""

    metadata = {"name": "fedge_cache_v0", "render_modes": []}

    def __init__(self, make_cores: Any, cooperation: bool = True) -> None:
        self.make_cores, self.cooperation = make_cores, cooperation
        self.cores: list[EdgeCore] = make_cores()
        self.possible_agents = [f"edge_{e}" for e in range(len(self.cores))]
        self.agents: list[str] = []
        self.episode = -1

    @functools.cache  # noqa: B019 - spaces must be the same object on every call
    def observation_space(self, agent: str) -> gym.spaces.Box:
        return _spaces(self.cores[0].C, self.cores[0].lw)[0]

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> gym.spaces.Discrete:
        return _spaces(self.cores[0].C, self.cores[0].lw)[1]

    def _neighbours(self, e: int) -> list[dict[int, int]]:
        return [c.slot_of for o, c in enumerate(self.cores) if o != e] if self.cooperation else []

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None or self.episode < 0:
            self.cores, self.episode = self.make_cores(), -1
        self.episode = (self.episode + 1) % len(self.cores[0].bounds)
        for e, core in enumerate(self.cores):
            core.start_episode(self.episode)
            core.advance(self._neighbours(e))
        self.agents = [a for a, c in zip(self.possible_agents, self.cores, strict=True) if c.pending >= 0]
        return ({a: self.cores[int(a[5:])].observation() for a in self.agents},
                {a: {"episode": self.episode} for a in self.agents})

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for a in self.agents:
            self.cores[int(a[5:])].decide(int(actions[a]))
        for a in self.agents:
            e = int(a[5:])
            core = self.cores[e]
            rewards[a] = -core.advance(self._neighbours(e))
            obs[a] = core.observation()
            terms[a], truncs[a] = core.pending < 0, False
            infos[a] = {"elapsed": core.elapsed, **(core.metrics() if terms[a] else {})}
        self.agents = [a for a in self.agents if not terms[a]]
        return obs, rewards, terms, truncs, infos

    def episode_metrics(self) -> dict[str, float]:
        """System-wide metrics of the current episode (all edges pooled)."""
        tot = {k: sum(getattr(c, k) for c in self.cores) for k in ("direct", "soft", "neighbour", "cloud")}
        loss = sum(c.sim_loss for c in self.cores)
        m = self.cores[0].model.summarise(sum(tot.values()), tot["direct"], tot["soft"], tot["neighbour"],
                                          tot["cloud"], loss)
        m["decisions"] = sum(c.decisions for c in self.cores)
        return m
