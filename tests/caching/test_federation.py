"""Federated caching agents exchange real messages: same results on both transports, every byte in the ledger,
and every edge holds the weighted average of what was uploaded."""

from __future__ import annotations

import pytest
import torch

from fedge.caching.agents import Agent, flat_params, make_agent
from fedge.caching.config import AgentConfig
from fedge.caching.train import federated_average, train_agents
from fedge.core import codec
from fedge.core.streams import Streams
from fedge.messaging.bodies import Body
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Kind, Role, Route
from fedge.messaging.transport import Delivery, DirectTransport, LoopbackTransport, make_transport

from .helpers import small_env

CFG = AgentConfig(hidden=8, warmup=16, batch_size=8, update_every=2)


class WatchedLoopback(LoopbackTransport):
    """A loopback transport that keeps every message (frame + body) that crossed."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.crossed: list[bytes] = []

    def carry(self, message: bytes) -> bytes:
        self.crossed.append(message)
        return super().carry(message)


class RecordingDirect(DirectTransport):
    """A direct transport that keeps what the cloud received (gathers) and what the edges received (broadcasts)."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.uploads: list[Delivery] = []
        self.downloads: list[Delivery] = []

    def gather(self, route: Route, body: Body) -> Delivery:
        got = super().gather(route, body)
        self.uploads.append(got)
        return got

    def broadcast(self, route: Route, body: Body) -> Delivery:
        got = super().broadcast(route, body)
        self.downloads.append(got)
        return got


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("bytes_total", "bytes_by_link")} for r in records]


@pytest.mark.parametrize("policy", ["fed-dqn", "fed-sac"])
def test_direct_and_loopback_give_identical_runs(policy: str) -> None:
    runs = {}
    for name in ("direct", "loopback"):
        cfg = AgentConfig(hidden=8, warmup=16, batch_size=8, update_every=2, personal_layers=policy == "fed-sac")
        runs[name] = train_agents(small_env(edges=3, episodes=3), policy, cfg, 3, seed=1,
                                  transport=make_transport(name, Ledger()))
    assert runs["direct"] == runs["loopback"]  # every metric, bytes included, equal to the last bit
    assert runs["direct"][-1]["bytes_total"] > 0


@pytest.mark.parametrize("policy", ["fed-dqn", "fed-sac"])
def test_ledger_counts_exactly_the_bytes_that_crossed(policy: str) -> None:
    edges, episodes = 3, 3
    transport = WatchedLoopback(Ledger())
    records = train_agents(small_env(edges=edges, episodes=episodes), policy, CFG, episodes, seed=0,
                           transport=transport)
    lengths = [len(m) for m in transport.crossed]
    ledger = transport.ledger
    assert ledger.bytes_by_link["edge-cloud"] == sum(lengths) == ledger.total == records[-1]["bytes_total"]
    assert records[-1]["bytes_by_link"]["edge-cloud"] == sum(lengths)
    # round 0 download of the common start, then one upload and one download per edge after every episode
    assert ledger.messages_by_link["edge-cloud"] == len(lengths) == edges + 2 * edges * episodes
    frames = [codec.unframe(m)[0] for m in transport.crossed]
    uploads = [f for f in frames if f.kind == Kind.MODEL]
    assert [f.round for f in uploads] == [e for e in range(episodes) for _ in range(edges)]
    assert all((f.sender_role, f.receiver_role) == (Role.EDGE, Role.SERVER) for f in uploads)
    cumulative = [r["bytes_total"] for r in records]
    assert cumulative == sorted(cumulative) and len(set(cumulative)) == episodes


@pytest.mark.parametrize("policy", ["dqn", "sac"])
def test_independent_agents_send_nothing(policy: str) -> None:
    transport = WatchedLoopback(Ledger())
    records = train_agents(small_env(), policy, CFG, 2, seed=0, transport=transport)
    assert transport.crossed == [] and transport.ledger.total == 0
    assert all(r["bytes_total"] == 0 and r["bytes_by_link"]["edge-cloud"] == 0 for r in records)


def _agents(kind: str, count: int) -> list[Agent]:
    return [make_agent(kind, 4, CFG, Streams(0), Role.EDGE, e) for e in range(count)]


@pytest.mark.parametrize("kind", ["dqn", "sac"])
@pytest.mark.parametrize("personal", [False, True])
def test_every_agent_holds_the_weighted_average_of_the_uploads(kind: str, personal: bool) -> None:
    agents = _agents(kind, 3)
    before = [flat_params(a.modules(), False) for a in agents]
    transport = RecordingDirect(Ledger())
    weights = [1.0, 2.0, 5.0]
    model = federated_average(agents, weights, personal, transport, round_number=4)
    (up,) = transport.uploads
    (down,) = transport.downloads
    assert up.route.round == down.route.round == 4
    uploaded = up.body.rows()  # type: ignore[attr-defined]
    assert uploaded[:, -1].tolist() == weights  # the cloud read the weights from the messages
    expected = (uploaded[:, :-1] * torch.tensor(weights)[:, None]).sum(0) / sum(weights)
    torch.testing.assert_close(model, expected, rtol=1e-6, atol=1e-7)
    for a in agents:
        assert torch.equal(flat_params(a.modules(), personal), model)  # what it received, loaded as is
    full = [flat_params(a.modules(), False) for a in agents]
    if personal:  # the personal scoring layers stayed each agent's own
        assert not torch.equal(full[0], full[1])
        shared = flat_params(agents[0].modules(), True).numel()
        assert shared < full[0].numel()
    else:
        assert all(torch.equal(full[0], f) for f in full[1:])
    assert not torch.equal(full[0], before[0])


def test_averaging_moves_the_same_bytes_on_both_transports() -> None:
    ledgers = {}
    for name in ("direct", "loopback"):
        ledgers[name] = Ledger()
        federated_average(_agents("dqn", 2), [1.0, 1.0], False, make_transport(name, ledgers[name]), 0)
    assert ledgers["direct"].state_dict() == ledgers["loopback"].state_dict()
    kinds = ledgers["direct"].bytes_by_kind
    assert kinds["model"] == kinds["download"] + 2 * 4 > 8  # an upload also carries its fp32 weight
