"""Federated averaging of agents' networks and a tiny training run of each learned policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.caching.agents import flat_params, make_agent
from fedge.caching.config import AgentConfig, SoftHitConfig, TraceConfig
from fedge.caching.env import MultiEdgeCacheEnv, edge_cores
from fedge.caching.similarity import SoftHitTable, synthetic_embeddings
from fedge.caching.trace import synthetic_trace
from fedge.caching.train import federated_average, train_agents

from .helpers import MODEL


@pytest.mark.parametrize("kind", ["dqn", "sac"])
def test_federated_average_equalises_shared_but_not_personal(kind: str) -> None:
    agents = [make_agent(kind, 4, AgentConfig(hidden=8), seed) for seed in range(3)]
    federated_average(agents, [1.0, 2.0, 1.0], personal=True)
    shared = [flat_params(a.modules(), personal=True) for a in agents]
    assert all(torch.equal(shared[0], s) for s in shared[1:])
    full = [flat_params(a.modules(), personal=False) for a in agents]
    assert not torch.equal(full[0], full[1])  # personal heads stayed different
    federated_average(agents, [1.0, 2.0, 1.0], personal=False)
    expected = (full[0] + 2 * full[1] + full[2]) / 4
    assert torch.allclose(flat_params(agents[0].modules(), personal=False), expected, atol=1e-6)


@pytest.mark.parametrize("policy", ["dqn", "fed-sac"])
def test_training_runs_and_is_seeded(policy: str) -> None:
    trace = synthetic_trace(TraceConfig(num_items=30, requests_per_episode=200, episodes=2), 2, seed=0)
    emb = synthetic_embeddings(30, 8, 3, 0)
    table = SoftHitTable.build(emb, SoftHitConfig())
    u = np.random.default_rng(0).random(len(trace))
    cfg = AgentConfig(hidden=8, warmup=16, batch_size=8, update_every=2)
    runs = []
    for _ in range(2):
        env = MultiEdgeCacheEnv(lambda: edge_cores(trace, 4, emb, table, MODEL, u, 200, 2, True, 10, 50), True)
        runs.append(train_agents(env, policy, cfg, 2, seed=3))
    assert [r["cost"] for r in runs[0]] == [r["cost"] for r in runs[1]]
    assert all(r["requests"] == 200 and r["decisions"] > 0 for r in runs[0])
