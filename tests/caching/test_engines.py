"""One engine (issue 17, acceptance 4): every heuristic replayed through the multi-edge environment the learned agents
use gives the simulator's metrics to the last bit on cooperative multi-edge traces; the run compares every policy on
its own last-episodes cost; the aging heuristic `dlfu`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedge.caching.config import HEURISTICS, AgentConfig, CacheConfig, SoftHitConfig, TraceConfig
from fedge.caching.env import MultiEdgeCacheEnv, edge_cores
from fedge.caching.policies import DecayedLFU, SimilarityLFU
from fedge.caching.replay import heuristic_action, heuristic_env, replay
from fedge.caching.report import compare_learned
from fedge.caching.rng import acceptance_draws
from fedge.caching.runner import run_cache
from fedge.caching.similarity import SoftHitTable, synthetic_embeddings
from fedge.caching.simulator import make_policies, simulate
from fedge.caching.trace import synthetic_trace
from fedge.caching.train import train_agents
from fedge.config import build

from .helpers import MODEL
from .helpers import replay as drive

EDGES, CAPACITY, EPISODE = 4, 6, 500
AGENT = AgentConfig(hidden=8, warmup=16, batch_size=8, update_every=2)


def _setup(seed: int) -> tuple[Any, ...]:
    """A drifting Zipf trace over 4 cooperating edges, small caches: misses are often served by a neighbour."""
    cfg = TraceConfig(num_items=60, requests_per_episode=EPISODE, episodes=4, drift_every=200, drift_fraction=0.2)
    trace = synthetic_trace(cfg, EDGES, seed)
    emb = synthetic_embeddings(60, 8, 5, seed)
    table = SoftHitTable.build(emb, SoftHitConfig(floor=0.3))
    return trace, emb, table, acceptance_draws(seed, len(trace))


@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", HEURISTICS)
def test_every_heuristic_costs_the_same_in_the_agents_environment(name: str, seed: int, soft: bool) -> None:
    trace, emb, table, u = _setup(seed)

    def policies() -> list[Any]:
        return make_policies(name, CAPACITY, trace, EDGES, seed, half_life=50)

    expected = simulate(trace, policies(), table, MODEL, u, EPISODE, True, soft)
    env = heuristic_env(lambda: edge_cores(trace, CAPACITY, emb, table, MODEL, u, EPISODE, EDGES, soft, 10, 50),
                        policies, True)
    got = replay(env, len(expected), seed)
    for e, s in zip(got, expected, strict=True):
        assert {k: v for k, v in e.items() if k != "decisions"} == s  # every metric, to the last bit
    assert sum(e["neighbour_ratio"] for e in expected) > 0  # cooperation mattered
    if soft:
        assert sum(e["soft_hit_ratio"] for e in expected) > 0
    if name not in ("static",):
        assert sum(e["decisions"] for e in got) > 0
    for core, policy in zip(env.cores, [c.policy for c in env.cores], strict=True):
        assert set(core.slot_of) == set(policy.cached)  # the environment's caches are the policies' caches


def test_run_gives_identical_summaries_on_both_engines() -> None:
    base = {"policies": list(HEURISTICS), "seed": 2, "network": {"edges": 3, "capacity": 8},
            "trace": {"kind": "synthetic", "num_items": 80, "episodes": 3, "requests_per_episode": 600,
                      "drift_every": 200}}
    runs = {}
    for engine in ("simulator", "env"):
        cfg = build(CacheConfig, {**base, "runtime": {"heuristic_engine": engine}})
        runs[engine] = run_cache(cfg, None, show=False).summary
    for name in HEURISTICS:
        a, b = runs["simulator"]["policies"][name], runs["env"]["policies"][name]
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert runs["env"]["heuristic_engine"] == "env"


def test_environment_serves_in_global_order_one_decision_at_a_time() -> None:
    trace, emb, table, u = _setup(0)
    env = MultiEdgeCacheEnv(lambda: edge_cores(trace, CAPACITY, emb, table, MODEL, u, EPISODE, EDGES, True, 10, 50))
    obs, infos = env.reset(seed=0)
    steps = 0
    while env.agents:
        assert [a for a in env.agents if infos[a]["pending"]] == [env.deciding]
        assert env.cores[env.decider].pending >= 0 and obs[env.deciding] is not None
        obs, rewards, terms, _, infos = env.step({env.deciding: CAPACITY})  # bypass: the caches stay as they are
        steps += 1
    assert all(terms.values()) and steps == env.episode_metrics()["decisions"]
    with pytest.raises(ValueError, match="no action for edge_"):
        env.reset()
        env.step({})


def test_training_reads_only_the_deciding_agents_observation() -> None:
    trace, emb, table, u = _setup(0)
    costs = []
    for observe in ("all", "deciding"):
        env = MultiEdgeCacheEnv(lambda: edge_cores(trace, CAPACITY, emb, table, MODEL, u, EPISODE, EDGES, True, 10,
                                                   50), True, observe)
        costs.append([r["cost"] for r in train_agents(env, "fed-dqn", AGENT, 2, seed=0)])
    assert costs[0] == costs[1]


def test_heuristic_action_mirrors_the_policy() -> None:
    trace, emb, table, u = _setup(0)
    env = heuristic_env(lambda: edge_cores(trace, CAPACITY, emb, table, MODEL, u, EPISODE, EDGES, True, 10, 50),
                        lambda: make_policies("lru", CAPACITY, trace, EDGES, 0), True)
    env.reset(seed=0)
    core = env.cores[env.decider]
    victim = next(k for k in core.slots if k not in core.policy.cached)
    assert core.slots[heuristic_action(core)] == victim


def test_decayed_lfu_forgets_old_popularity() -> None:
    # item 2 was requested 200 times; then item 1 is requested 30 times: sim-lfu would need over 200 requests to
    # let 1 in, dlfu (half-life 10 requests) lets it in once 2's uses have aged
    requests = [2] * 200 + [1] * 30
    sim, dec = SimilarityLFU(1), DecayedLFU(1, half_life=10)
    assert sum(drive(sim, requests)) == 199 and set(sim.cached) == {2}
    hits = drive(dec, requests)
    assert set(dec.cached) == {1} and 10 <= 230 - sum(hits) - 1 <= 15  # 1 entered after about one half-life


def test_decayed_lfu_rescales_its_weights() -> None:
    policy = DecayedLFU(2, half_life=1)  # the weights would overflow after ~1,000 requests without rescaling
    hits = drive(policy, [k % 3 for k in range(3000)])
    assert all(np.isfinite(v) for v in policy.score.values()) and len(hits) == 3000
    assert policy.base > 0


def test_best_heuristic_is_chosen_by_its_last_episodes_cost() -> None:
    runs = {"lru": {"cost": 1.0, "cost_per_episode": [0.8, 0.9, 1.2, 1.2, 1.2]},
            "dlfu": {"cost": 1.1, "cost_per_episode": [1.2, 1.2, 1.0, 1.0, 1.0]},
            "belady": {"cost": 0.5, "cost_per_episode": [0.5] * 5},
            "dqn": {"cost": 1.2, "cost_per_episode": [1.5, 1.3, 1.1, 1.05, 0.95]}}
    out = compare_learned(runs)
    assert out["best_online_heuristic"] == "dlfu" and out["best_heuristic_final_cost"] == pytest.approx(1.0)
    assert out["dqn"]["final_cost"] == pytest.approx(1.1 / 3 + 2 / 3)
    assert not out["dqn"]["beats_best_heuristic_at_end"] and out["dqn"]["episodes_to_reach_best_heuristic"] == 5

