"""Heuristic policies replayed through the multi-edge environment the learned agents use (one engine).

Each edge's `EdgeCore` gets its heuristic policy object attached (`EdgeCore.attach`): the core tells the policy of
every direct hit, soft hit and miss, with the request's global index, exactly as `fedge.caching.simulator.simulate`
does, and fills the cache only with what the policy admits. When a miss finds the cache full the environment stops
for that edge's decision; the policy has already chosen (its `miss` ran), and `heuristic_action` turns its choice
into the environment's action — the slot of the item it evicted, or C when it bypassed the new item. The agents'
serving loop and cost accounting therefore score the heuristics too; tests/caching/test_engines.py checks that
every heuristic's metrics equal the simulator's to the last bit on cooperative multi-edge traces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedge.caching.edge import EdgeCore
from fedge.caching.env import MultiEdgeCacheEnv


def heuristic_action(core: EdgeCore) -> int:
    """The action that mirrors the attached policy's choice for the pending miss: the slot of the item it dropped
    from its cache, or C when it did not admit the requested item."""
    cached = core.policy.cached
    if core.pending not in cached:
        return core.C
    for slot, item in enumerate(core.slots):
        if item not in cached:
            return slot
    raise AssertionError(f"policy {type(core.policy).__name__} admitted item {core.pending} without evicting one")


def heuristic_env(make_cores: Callable[[], list[EdgeCore]], make_policies: Callable[[], list[Any]],
                  cooperation: bool) -> MultiEdgeCacheEnv:
    """The multi-edge environment with a fresh heuristic policy attached to every fresh edge (observations off)."""
    def build() -> list[EdgeCore]:
        cores = make_cores()
        for core, policy in zip(cores, make_policies(), strict=True):
            core.attach(policy)
        return cores
    return MultiEdgeCacheEnv(build, cooperation, observe="none")


def replay(env: MultiEdgeCacheEnv, episodes: int, seed: int = 0,
           on_episode: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run `episodes` episodes (warm caches across them, as for the agents); one metrics dict per episode."""
    results = []
    for episode in range(episodes):
        env.reset(seed=seed if episode == 0 else None)
        while env.agents:
            e = env.decider
            env.step({env.possible_agents[e]: heuristic_action(env.cores[e])})
        metrics: dict[str, Any] = env.episode_metrics()
        metrics["episode"] = episode
        results.append(metrics)
        if on_episode is not None:
            on_episode(episode, metrics)
    return results


__all__ = ["heuristic_action", "heuristic_env", "replay"]
