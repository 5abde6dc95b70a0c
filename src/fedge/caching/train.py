"""Online training of learned caching agents on the multi-edge environment, independent or federated.

Every edge server is one agent that decides alone from its local observation (Sun et al., IEEE JSAC 2023). Agents
learn online while serving the stream, so an episode's cost is the cost the system actually paid while learning.
Federated variants average the agents' networks every `fed_every` episodes with FedAvg (McMahan et al. 2017) over
flattened parameters, weighted uniformly or by the number of requests each edge served in the episode; with
`personal_layers` the final scoring layers stay local (FedPer, Arivazhagan et al. 2019).

Federation is message passing over a `fedge.messaging` transport, so its traffic is counted in the transport's
ledger from the bytes that crossed (edge-cloud link; frames included):

* common start (round 0, before the first episode): the cloud initialises the global model x0 from its own stream
  (`cache-agent-init`, endpoint (server, 0)) and broadcasts it (Kind.DOWNLOAD) to every edge, which loads all of it
  — FedAvg starts every client from one global model;
* averaging (round = the episode just finished): every edge uploads (Kind.MODEL) its shared parameters followed by
  its weight, the cloud averages the uploads it received in edge order, and broadcasts (Kind.DOWNLOAD) the average,
  which every edge loads in place of its shared parameters.

Independent agents send nothing (their ledger stays at 0).

The environment serves all edges' requests in global order and stops at one edge's decision at a time; each agent's
transition runs from its decision to its own next one (or the episode's end), its reward the summed cost its edge
paid in between and its discount γ^(requests its edge served in between), collected over the steps in which others
decided.

Rewards are centred: each step's reward is −Σ(cost − c̄) over the requests it spans, with c̄ a running mean cost per
request (reward centering, Naik et al. 2024). Without it, value estimates that start near 0 make steps spanning few
requests look cheap, and agents learn to cause misses (evicting popular items) because misses shorten steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedge.caching.agents import Agent, flat_params, load_flat_params, make_agent
from fedge.caching.config import AgentConfig
from fedge.caching.env import MultiEdgeCacheEnv
from fedge.core.aggregation import weighted_average
from fedge.core.streams import Streams
from fedge.messaging.bodies import Models
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Kind, Role, route
from fedge.messaging.transport import Delivery, DirectTransport, Transport

CLOUD = 0  # the cloud's endpoint number (Role.SERVER)


def _load(agents: list[Agent], delivery: Delivery, personal: bool) -> None:
    """Every receiving edge loads the model vector it received."""
    assert isinstance(delivery.body, Models)
    for edge, vector in zip(delivery.route.receivers.tolist(), delivery.body.rows(), strict=True):
        load_flat_params(agents[edge].modules(), vector, personal)
        agents[edge].refresh()


def _download(agents: list[Agent], model: torch.Tensor, personal: bool, transport: Transport,
              round_number: int) -> None:
    """The cloud sends `model` to every edge (one row, E messages), which loads what it received."""
    edges = torch.arange(len(agents))
    got = transport.broadcast(route(Kind.DOWNLOAD, round_number, Role.SERVER, Role.EDGE, CLOUD, edges),
                              Models(model[None, :], torch.zeros(len(agents), dtype=torch.long)))
    _load(agents, got, personal)


def common_start(agents: list[Agent], initial: torch.Tensor, transport: Transport) -> None:
    """Round 0: the cloud broadcasts its initial model `initial` (all parameters) and every edge loads it."""
    _download(agents, initial, False, transport, 0)


def federated_average(agents: list[Agent], weights: list[float], personal: bool, transport: Transport,
                      round_number: int) -> torch.Tensor:
    """One FedAvg round through `transport`: uploads to the cloud, the weighted average of what it received (summed
    in edge order), one download to every edge. An upload is [shared parameters ‖ weight], so the cloud reads its
    weights from the messages too. Returns the average (the cloud's model)."""
    edges = torch.arange(len(agents))
    uploads = torch.stack([torch.cat([flat_params(a.modules(), personal), torch.tensor([float(w)])])
                           for a, w in zip(agents, weights, strict=True)])
    up = transport.gather(route(Kind.MODEL, round_number, Role.EDGE, Role.SERVER, edges, CLOUD),
                          Models.one_each(uploads))
    assert isinstance(up.body, Models)
    received = up.body.rows()[torch.argsort(up.route.senders)]
    model = weighted_average(received[:, :-1], received[:, -1])
    _download(agents, model, personal, transport, round_number)
    return model


def traffic(ledger: Ledger) -> dict[str, Any]:
    """Cumulative bytes that crossed the transport (frames included): in total and per link."""
    return {"bytes_total": ledger.total, "bytes_by_link": dict(ledger.bytes_by_link)}


def train_agents(env: MultiEdgeCacheEnv, policy: str, cfg: AgentConfig, episodes: int, seed: int,
                 on_episode: Callable[[int, dict[str, Any]], None] | None = None,
                 transport: Transport | None = None) -> list[dict[str, Any]]:
    """Run `episodes` episodes of online learning; `policy` is a registered agent (sac, dqn) or `fed-<agent>`.
    Federated traffic goes through `transport` (default: a direct transport with a fresh ledger); every episode's
    metrics carry the ledger's cumulative `bytes_total` and `bytes_by_link`."""
    transport = transport if transport is not None else DirectTransport(Ledger())
    federated = policy.startswith("fed-")
    kind = policy.removeprefix("fed-")
    capacity = env.cores[0].C
    streams = Streams(seed)
    agents = [make_agent(kind, capacity, cfg, streams, Role.EDGE, e) for e in range(len(env.possible_agents))]
    if federated:
        cloud = make_agent(kind, capacity, cfg, streams, Role.SERVER, CLOUD)
        common_start(agents, flat_params(cloud.modules(), personal=False), transport)
        del cloud
    results = []
    centre: list[float | None] = [None] * len(agents)  # running mean cost per request, per agent (reward centering)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def close(e: int, step: list[Any], next_obs: Any, terminal: bool) -> None:
        """Store edge e's transition from its decision to its next one (or to the episode's end)."""
        obs, action, reward, elapsed = step[0], step[1], step[2], max(step[3], 1)
        rate = -reward / elapsed
        c = centre[e]
        centre[e] = c = rate if c is None else c + cfg.centre_rate * (rate - c)
        discount = 0.0 if terminal else cfg.gamma ** elapsed
        agents[e].remember(obs, action, reward + c * elapsed, next_obs, discount)

    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            open_steps: list[list[Any] | None] = [None] * len(agents)  # per edge: [obs, action, reward, elapsed]
            while env.agents:
                e = env.decider
                name = env.possible_agents[e]
                previous = open_steps[e]
                if previous is not None:
                    close(e, previous, obs[name], False)
                action = agents[e].act(obs[name])
                open_steps[e] = [obs[name], action, 0.0, 0]
                obs, rewards, _, _, infos = env.step({name: action})
                for f, step in enumerate(open_steps):
                    if step is not None:
                        step[2] += rewards[env.possible_agents[f]]
                        step[3] += infos[env.possible_agents[f]]["elapsed"]
                if not env.agents:
                    for f, step in enumerate(open_steps):
                        if step is not None:
                            close(f, step, obs[env.possible_agents[f]], True)
            metrics: dict[str, Any] = env.episode_metrics()
            if federated and (episode + 1) % cfg.fed_every == 0:
                weights = ([float(c.metrics()["requests"]) + 1e-9 for c in env.cores] if cfg.fed_weighting == "requests"
                           else [1.0] * len(agents))
                federated_average(agents, weights, cfg.personal_layers, transport, episode)
            metrics["episode"] = episode
            metrics.update(traffic(transport.ledger))
            results.append(metrics)
            if on_episode is not None:
                on_episode(episode, metrics)
    finally:
        torch.set_num_threads(torch_threads)
    return results
