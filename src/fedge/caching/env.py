"""Reinforcement-learning environments: a Gymnasium env for one edge and a PettingZoo ParallelEnv for E edges.

Cache replacement is a (multi-agent) MDP as in Sun et al. (IEEE JSAC 2023). A decision is needed only when a
requested item misses and the cache is full, so an env step jumps from one such decision to the next (a semi-MDP):
hits, soft hits and misses while the cache still has room are served in between, and the step's reward is minus the
summed system cost of every request served since the previous decision, and `info["elapsed"]` is how many requests
that was, so learners can discount per request (γ^elapsed, a semi-MDP) rather than per decision — discounting per
decision would favour actions that cause more misses, since those make decisions (and discounting) more frequent.

Observation and action: `fedge.caching.edge` (one row per cache slot plus the request; evict slot a, or C = bypass).

The multi-edge environment serves the requests of all edges in their exact global order (one engine for every
policy): it stops at each miss that finds its edge's cache full, so exactly one edge decides per step and a
neighbour's cache is always looked at as of the request's own time. A heuristic replays through the same
environment by attaching its policy object to each edge (`EdgeCore.attach`; `fedge.caching.replay`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from fedge.caching.edge import FEATURES, EdgeCore, edge_cores


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
    """E edge servers (PettingZoo Parallel API, agents `edge_i`) serving their requests in exact global order.
    Every edge is live from `reset` to the episode's end; a step stops at the next miss that finds its edge's
    cache full, so exactly one agent decides per step (`deciding`, `infos[a]["pending"]`): its action is
    applied and the other agents' actions (which may be omitted) are ignored. Each agent's reward is minus the cost
    its edge paid since the previous step and `infos[a]["elapsed"]` how many of its requests that was. With
    cooperation a miss is served by a neighbour whose cache holds the item at the request's own time.
    `observe`: "all" (every live agent's observation each step), "deciding" (only the deciding agent's, and every
    agent's at the episode's end: what a learner of the per-edge semi-MDP reads; `fedge.caching.train`) or "none"
    (heuristic replay); an observation not computed is None."""

    metadata = {"name": "fedge_cache_v1", "render_modes": []}

    def __init__(self, make_cores: Any, cooperation: bool = True,
                 observe: Literal["all", "deciding", "none"] = "all") -> None:
        self.make_cores, self.cooperation, self.observe = make_cores, cooperation, observe
        self._build()
        self.possible_agents = [f"edge_{e}" for e in range(len(self.cores))]
        self.agents: list[str] = []
        self.episode, self.decider, self.loss = -1, -1, 0.0

    def _build(self) -> None:
        self.cores: list[EdgeCore] = self.make_cores()
        n = sum(len(c.items) for c in self.cores)
        order = np.empty(n, dtype=np.int64)
        for e, core in enumerate(self.cores):
            order[core.times] = e
        self.order = order.tolist()
        self.nbrs = [[c.slot_of for o, c in enumerate(self.cores) if o != e] if self.cooperation else []
                     for e in range(len(self.cores))]
        # global bounds of episode i: the requests before it are the edges' requests before it, summed
        self.bounds = [(sum(c.bounds[i][0] for c in self.cores), sum(c.bounds[i][1] for c in self.cores))
                       for i in range(len(self.cores[0].bounds))]

    @functools.cache  # noqa: B019 - spaces must be the same object on every call
    def observation_space(self, agent: str) -> gym.spaces.Box:
        return _spaces(self.cores[0].C, self.cores[0].lw)[0]

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> gym.spaces.Discrete:
        return _spaces(self.cores[0].C, self.cores[0].lw)[1]

    @property
    def deciding(self) -> str | None:
        """The agent whose miss awaits a decision (None once the episode is over)."""
        return self.possible_agents[self.decider] if self.decider >= 0 else None

    def _serve(self) -> None:
        """Serve global requests until a miss needs a decision (`decider`) or the episode ends (decider −1)."""
        cores, order, nbrs = self.cores, self.order, self.nbrs
        self.cost, self.count = [0.0] * len(cores), [0] * len(cores)
        cost, count = self.cost, self.count
        self.decider = -1
        while self.t < self.stop:
            e = order[self.t]
            self.t += 1
            core = cores[e]
            cost[e] += core.serve(nbrs[e])
            count[e] += 1
            self.loss += core.last_loss
            if core.pending >= 0:
                self.decider = e
                return

    def _obs(self, e: int) -> np.ndarray | None:
        wanted = self.observe == "all" or (self.observe == "deciding" and self.decider in (e, -1))
        return self.cores[e].observation() if wanted else None

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None or self.episode < 0:
            self._build()
            self.episode = -1
        self.episode = (self.episode + 1) % len(self.bounds)
        for core in self.cores:
            core.start_episode(self.episode)
        (self.t, self.stop), self.loss = self.bounds[self.episode], 0.0
        self._serve()
        self.agents = list(self.possible_agents) if self.decider >= 0 else []
        return ({a: self._obs(e) for e, a in enumerate(self.agents)},
                {a: {"episode": self.episode, "pending": e == self.decider} for e, a in enumerate(self.agents)})

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if self.decider < 0:
            return {}, {}, {}, {}, {}
        name = self.possible_agents[self.decider]
        if name not in actions:
            raise ValueError(f"step: no action for {name}, whose miss awaits a decision")
        self.cores[self.decider].decide(int(actions[name]))
        self._serve()
        done = self.decider < 0
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for e, a in enumerate(self.agents):
            obs[a], rewards[a], terms[a], truncs[a] = self._obs(e), -self.cost[e], done, False
            infos[a] = {"elapsed": self.count[e], "pending": e == self.decider,
                        **(self.cores[e].metrics() if done else {})}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def episode_metrics(self) -> dict[str, float]:
        """System-wide metrics of the current episode (all edges pooled; the similarity loss summed in global
        order, so that they equal the simulator's to the last bit)."""
        tot = {k: sum(getattr(c, k) for c in self.cores) for k in ("direct", "soft", "neighbour", "cloud")}
        m = self.cores[0].model.summarise(sum(tot.values()), tot["direct"], tot["soft"], tot["neighbour"],
                                          tot["cloud"], self.loss)
        m["decisions"] = sum(c.decisions for c in self.cores)
        return m


__all__ = ["FEATURES", "CacheEnv", "EdgeCore", "MultiEdgeCacheEnv", "edge_cores"]
