"""The Gymnasium and PettingZoo environments: API conformance, and agreement with the fast simulator."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from fedge.caching.config import SoftHitConfig, TraceConfig
from fedge.caching.env import CacheEnv, MultiEdgeCacheEnv, edge_cores
from fedge.caching.similarity import SoftHitTable, synthetic_embeddings
from fedge.caching.simulator import make_policies, simulate
from fedge.caching.trace import synthetic_trace

from .helpers import MODEL


def _setup(edges: int, requests: int = 600, items: int = 40) -> tuple:
    trace = synthetic_trace(TraceConfig(num_items=items, requests_per_episode=requests // 3, episodes=3,
                                        drift_every=100), edges, seed=1)
    emb = synthetic_embeddings(items, 8, 4, seed=1)
    table = SoftHitTable.build(emb, SoftHitConfig(floor=0.3))
    u = np.random.default_rng(2).random(len(trace))
    return trace, emb, table, u


def test_gymnasium_env_checker() -> None:
    trace, emb, table, u = _setup(1)
    env = CacheEnv(lambda: edge_cores(trace, 5, emb, table, MODEL, u, 200, 1, True, 10, 50)[0])
    check_env(env, skip_render_check=True)


def test_pettingzoo_parallel_api() -> None:
    trace, emb, table, u = _setup(3)
    env = MultiEdgeCacheEnv(lambda: edge_cores(trace, 5, emb, table, MODEL, u, 200, 3, True, 10, 50), True)
    parallel_api_test(env, num_cycles=200)


def test_env_with_fifo_actions_matches_simulator_fifo() -> None:
    """Evicting the slot admitted longest ago (smallest time-in-cache feature) is FIFO: same cost as the simulator."""
    trace, emb, table, u = _setup(1)
    env = CacheEnv(lambda: edge_cores(trace, 5, emb, table, MODEL, u, 200, 1, True, 10, 50)[0])
    expected = simulate(trace, make_policies("fifo", 5, trace, 1, 0), table, MODEL, u, 200, False, True)
    obs, _ = env.reset(seed=0)
    for episode in range(3):
        if episode:
            obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            obs, reward, done, _, info = env.step(int(np.argmax(-obs[:-1, 4])))
            total -= reward
        assert abs(info["cost"] - expected[episode]["cost"]) < 1e-9
        assert info["soft_hit_ratio"] == expected[episode]["soft_hit_ratio"]
        assert total <= info["cost"] * info["requests"] + 1e-9  # rewards cover the requests after the first decision


def test_bypass_action_keeps_cache() -> None:
    trace, emb, table, u = _setup(1)
    env = CacheEnv(lambda: edge_cores(trace, 5, emb, table, MODEL, u, 200, 1, True, 10, 50)[0])
    env.reset(seed=0)
    before = list(env.core.slots)
    env.step(5)
    assert env.core.slots == before
