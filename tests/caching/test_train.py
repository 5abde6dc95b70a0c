"""Learned agents: the registry, named streams, a tiny training run of each learned policy, seeding."""

from __future__ import annotations

import pytest
import torch

from fedge.caching.agents import AGENTS, DQNAgent, SACAgent, flat_params, learned_policies, make_agent
from fedge.caching.config import LEARNED, AgentConfig, CacheConfig
from fedge.caching.runner import check_policies
from fedge.caching.train import common_start, train_agents
from fedge.config import ConfigError, build
from fedge.core.streams import Streams
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Role
from fedge.messaging.transport import LoopbackTransport

from .helpers import small_env

CFG = AgentConfig(hidden=8, warmup=16, batch_size=8, update_every=2)


def test_registry_builds_agents_by_name() -> None:
    assert set(AGENTS.names()) >= {"dqn", "sac"}
    assert isinstance(make_agent("dqn", 4, CFG, Streams(0)), DQNAgent)
    assert isinstance(make_agent("sac", 4, CFG, Streams(0)), SACAgent)
    assert learned_policies()[:len(LEARNED)] == list(LEARNED)
    with pytest.raises(ConfigError, match="unknown caching agent 'ppo'"):
        make_agent("ppo", 4, CFG, Streams(0))
    with pytest.raises(ConfigError, match="policies: unknown policy 'fed-ppo'"):
        check_policies(build(CacheConfig, {"policies": ["lru", "fed-ppo"]}))


@pytest.mark.parametrize("kind", ["dqn", "sac"])
def test_agent_streams_are_per_endpoint_and_leave_global_rng_alone(kind: str) -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = make_agent(kind, 4, CFG, Streams(7), Role.EDGE, 2)
    assert torch.equal(torch.rand(3), expected)  # agent initialisation did not consume the global RNG
    b = make_agent(kind, 4, CFG, Streams(7), Role.EDGE, 2)
    other = make_agent(kind, 4, CFG, Streams(7), Role.EDGE, 1)
    cloud = make_agent(kind, 4, CFG, Streams(7), Role.SERVER, 0)
    pa, pb = flat_params(a.modules(), False), flat_params(b.modules(), False)
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, flat_params(other.modules(), False))
    assert not torch.equal(pa, flat_params(cloud.modules(), False))


@pytest.mark.parametrize("policy", ["dqn", "fed-sac"])
def test_training_runs_and_is_seeded(policy: str) -> None:
    runs = [train_agents(small_env(), policy, CFG, 2, seed=3) for _ in range(2)]
    assert [r["cost"] for r in runs[0]] == [r["cost"] for r in runs[1]]
    assert all(r["requests"] == 200 and r["decisions"] > 0 for r in runs[0])
    other_seed = train_agents(small_env(), policy, CFG, 2, seed=4)
    assert [r["cost"] for r in other_seed] != [r["cost"] for r in runs[0]]


@pytest.mark.parametrize("kind", ["dqn", "sac"])
def test_federated_start_is_the_clouds_initial_model(kind: str) -> None:
    """Round 0: every edge loads what the cloud broadcast, its own initial model, all parameters included."""
    agents = [make_agent(kind, 4, CFG, Streams(0), Role.EDGE, e) for e in range(3)]
    initial = flat_params(make_agent(kind, 4, CFG, Streams(0), Role.SERVER, 0).modules(), False)
    ledger = Ledger()
    common_start(agents, initial, LoopbackTransport(ledger))
    assert all(torch.equal(flat_params(a.modules(), False), initial) for a in agents)
    assert ledger.messages_by_link["edge-cloud"] == 3 and ledger.bytes_by_kind["download"] == ledger.total
