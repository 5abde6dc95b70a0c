"""Online training of learned caching agents on the multi-edge environment, independent or federated.

Every edge server is one agent that decides alone from its local observation (Sun et al., IEEE JSAC 2023). Agents
learn online while serving the stream, so an episode's cost is the cost the system actually paid while learning.
Federated variants average the agents' networks every `fed_every` episodes with FedAvg (McMahan et al. 2017) over
flattened parameters, weighted uniformly or by the number of requests each edge served in the episode; with
`personal_layers` the final scoring layers stay local (FedPer, Arivazhagan et al. 2019).

Rewards are centred: each step's reward is −Σ(cost − c̄) over the requests it spans, with c̄ a running mean cost per
request (reward centering, Naik et al. 2024). Without it, value estimates that start near 0 make steps spanning few
requests look cheap, and agents learn to cause misses (evicting popular items) because misses shorten steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedge.caching.agents import flat_params, load_flat_params, make_agent
from fedge.caching.config import AgentConfig
from fedge.caching.env import MultiEdgeCacheEnv
from fedge.core.aggregation import weighted_average


def federated_average(agents: list, weights: list[float], personal: bool) -> None:
    """Replace every agent's shared parameters by their weighted average."""
    bank = torch.stack([flat_params(a.modules(), personal) for a in agents])
    mean = weighted_average(bank, torch.tensor(weights, dtype=bank.dtype))
    for agent in agents:
        load_flat_params(agent.modules(), mean, personal)
        agent.refresh()


def train_agents(env: MultiEdgeCacheEnv, policy: str, cfg: AgentConfig, episodes: int, seed: int,
                 on_episode: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Run `episodes` episodes of online learning; `policy` is sac, dqn, fed-sac or fed-dqn."""
    federated = policy.startswith("fed-")
    kind = policy.removeprefix("fed-")
    capacity = env.cores[0].C
    agents = [make_agent(kind, capacity, cfg, seed * 1000 + e) for e in range(len(env.possible_agents))]
    if federated:  # a common starting point, as FedAvg starts from one global model
        federated_average(agents, [1.0] * len(agents), personal=False)
    results = []
    centre = [None] * len(agents)  # running mean cost per request, per agent (reward centering)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            while env.agents:
                actions = {a: agents[int(a[5:])].act(obs[a]) for a in env.agents}
                next_obs, rewards, terms, _, infos = env.step(actions)
                for a, action in actions.items():
                    e, elapsed = int(a[5:]), max(infos[a]["elapsed"], 1)
                    rate = -rewards[a] / elapsed
                    centre[e] = rate if centre[e] is None else centre[e] + cfg.centre_rate * (rate - centre[e])
                    discount = 0.0 if terms[a] else cfg.gamma ** elapsed
                    agents[e].remember(obs[a], action, rewards[a] + centre[e] * elapsed, next_obs[a], discount)
                obs = {a: next_obs[a] for a in env.agents}
            metrics = env.episode_metrics()
            if federated and (episode + 1) % cfg.fed_every == 0:
                weights = ([float(c.metrics()["requests"]) + 1e-9 for c in env.cores] if cfg.fed_weighting == "requests"
                           else [1.0] * len(agents))
                federated_average(agents, weights, cfg.personal_layers)
            metrics["episode"] = episode
            results.append(metrics)
            if on_episode is not None:
                on_episode(episode, metrics)
    finally:
        torch.set_num_threads(torch_threads)
    return results
