"""Learned cache-replacement agents: DQN and discrete soft actor-critic over a per-slot network.

`SlotNet` scores every cache slot with the same small MLP applied to (slot features, requested-item features), plus a
"do not admit" score from the requested item alone, so one network fits any capacity C and the action space grows
without growing the network. DQN is double DQN with soft target updates (van Hasselt et al. 2016); the discrete SAC
follows Christodoulou (2019) as used by Sun et al. (IEEE JSAC 2023): two critics with targets, expectation over the
action distribution instead of reparameterisation, and an automatically tuned temperature whose target entropy is
`target_entropy_ratio`·log(C+1). The final scoring layers (`head`, `none_head`) are the "personal" layers that the
federated variants may keep local.

Agents are built by name from the registry `AGENTS` (`AGENTS.create("dqn", capacity, cfg, streams)`); a library may
register its own. Each agent draws from its own named streams (`AgentStreams`: initialisation, exploration, replay
sampling), keyed by its endpoint (role and index), so an agent's draws do not depend on the other agents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedge.caching.config import LEARNED, AgentConfig
from fedge.caching.env import FEATURES
from fedge.caching.rng import numpy_stream
from fedge.core.streams import Streams
from fedge.messaging.messages import Role
from fedge.registry import Registry

PERSONAL = ("head.", "none_head.")


class SlotNet(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.none_head = nn.Linear(hidden, 1)
        self.value = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, C+1, F] → scores [B, C+1] (last = do not admit): a state value from the mean slot embedding and
        the request (dueling, Wang et al. 2016) plus a per-action advantage."""
        h = self.enc(obs)
        req = h[:, -1:, :]
        pair = torch.cat([h[:, :-1, :], req.expand(-1, h.shape[1] - 1, -1)], dim=-1)
        adv = torch.cat([self.head(pair).squeeze(-1), self.none_head(req[:, 0])], dim=1)
        value = self.value(torch.cat([h[:, :-1, :].mean(1), req[:, 0]], dim=-1))
        return value + adv - adv.mean(1, keepdim=True)


def numpy_weights(net: SlotNet) -> list[np.ndarray]:
    """Copies of the layers `numpy_scores` needs (acting in numpy avoids torch's per-call overhead)."""
    layers = (net.enc[0], net.enc[2], net.head[0], net.head[2], net.none_head)
    return [t.detach().numpy().copy() for layer in layers for t in (layer.weight, layer.bias)]


def numpy_scores(w: list[np.ndarray], obs: np.ndarray) -> np.ndarray:
    """SlotNet's advantages for one observation [C+1, F] → [C+1]. The state value and the mean subtraction shift
    every action equally, so argmax and softmax over these equal those over the full forward pass."""
    h = np.maximum(obs @ w[0].T + w[1], 0.0)
    h = np.maximum(h @ w[2].T + w[3], 0.0)
    hidden = h.shape[1]
    req = h[-1]
    pair = np.maximum(h[:-1] @ w[4][:, :hidden].T + req @ w[4][:, hidden:].T + w[5], 0.0)
    return np.concatenate([pair @ w[6][0] + w[7][0], req @ w[8][0] + w[9]])


class Replay:
    """Uniform replay buffer held in numpy arrays."""

    def __init__(self, size: int, slots: int) -> None:
        self.obs = np.zeros((size, slots, FEATURES), np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.action = np.zeros(size, np.int64)
        self.reward = np.zeros(size, np.float32)
        self.discount = np.zeros(size, np.float32)
        self.size, self.n, self.i = size, 0, 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, discount: float) -> None:
        i = self.i
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.discount[i] = next_obs, discount
        self.i, self.n = (i + 1) % self.size, min(self.n + 1, self.size)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        j = rng.integers(0, self.n, size=batch)
        return (torch.from_numpy(self.obs[j]), torch.from_numpy(self.action[j]), torch.from_numpy(self.reward[j]),
                torch.from_numpy(self.next_obs[j]), torch.from_numpy(self.discount[j]))


def _soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, tau)


class Memory:
    """Replay plus the update schedule: `add` returns True when the agent should take a gradient step."""

    def __init__(self, capacity: int, cfg: AgentConfig) -> None:
        self.cfg, self.replay, self.steps = cfg, Replay(cfg.buffer_size, capacity + 1), 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, discount: float) -> bool:
        self.replay.add(obs, action, reward, next_obs, discount)
        self.steps += 1
        return self.replay.n >= max(self.cfg.warmup, self.cfg.batch_size) and self.steps % self.cfg.update_every == 0


def named_shared(modules: dict[str, nn.Module], personal: bool) -> list[tuple[str, nn.Parameter]]:
    """Parameters that federation averages: all of them, or all but the personal scoring layers."""
    return [(f"{m}.{n}", p) for m, mod in modules.items() for n, p in mod.named_parameters()
            if not (personal and n.startswith(PERSONAL))]


def flat_params(modules: dict[str, nn.Module], personal: bool) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for _, p in named_shared(modules, personal)])


def load_flat_params(modules: dict[str, nn.Module], vector: torch.Tensor, personal: bool) -> None:
    offset = 0
    with torch.no_grad():
        for _, p in named_shared(modules, personal):
            p.copy_(vector[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


@dataclass
class AgentStreams:
    """The named streams of the agent at one endpoint: `init_seed` seeds its networks' initialisation, `explore` its
    exploration draws, `replay` its minibatch indices (`fedge.caching.rng` lists the purposes)."""

    init_seed: int
    explore: np.random.Generator
    replay: np.random.Generator

    @classmethod
    def of(cls, streams: Streams, role: Role = Role.EDGE, index: int = 0) -> AgentStreams:
        """The streams of endpoint (role, index): an edge's agent, or the cloud's initial model (Role.SERVER, 0)."""
        parts = (int(role), index)
        return cls(streams.generator("cache-agent-init", *parts).initial_seed(),
                   numpy_stream(streams.seed, "cache-agent-explore", *parts),
                   numpy_stream(streams.seed, "cache-agent-replay", *parts))


def _seeded_nets(seed: int, hidden: int, count: int) -> list[SlotNet]:
    """`count` SlotNets initialised from `seed` without disturbing the global torch RNG (nn.Linear initialises from
    it; `fork_rng` restores it afterwards)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [SlotNet(hidden) for _ in range(count)]


class Agent(Protocol):
    """What training needs of a learned caching agent."""

    def act(self, obs: np.ndarray, explore: bool = True) -> int: ...

    def remember(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, discount: float) -> None: ...

    def modules(self) -> dict[str, nn.Module]: ...

    def refresh(self) -> None: ...


AgentBuilder = Callable[[int, AgentConfig, AgentStreams], Agent]  # (capacity C, config, streams) -> agent
AGENTS: Registry[AgentBuilder] = Registry("caching agent")


class DQNAgent:
    """Double DQN with ε-greedy exploration decaying linearly over `epsilon_decay_steps` decisions."""

    def __init__(self, capacity: int, cfg: AgentConfig, streams: AgentStreams) -> None:
        self.cfg, self.rng, self.batch_rng = cfg, streams.explore, streams.replay
        self.memory = Memory(capacity, cfg)
        self.q, self.q_target = _seeded_nets(streams.init_seed, cfg.hidden, 2)
        self.weights: list[np.ndarray] | None = None
        self.q_target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"q": self.q, "q_target": self.q_target}

    def remember(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, discount: float) -> None:
        """Store a transition; `discount` is γ^(requests until the next decision), 0 at the end of an episode."""
        if self.memory.add(obs, action, reward, next_obs, discount):
            self.learn()
            self.weights = None

    def refresh(self) -> None:
        """Forget the numpy copy of the acting network (after its parameters changed outside `learn`)."""
        self.weights = None

    def act(self, obs: np.ndarray, explore: bool = True) -> int:
        c = self.cfg
        frac = max(0.0, 1 - self.memory.steps / c.epsilon_decay_steps)
        eps = c.epsilon_end + (c.epsilon_start - c.epsilon_end) * frac
        if explore and self.rng.random() < eps:
            return int(self.rng.integers(0, obs.shape[0]))
        if self.weights is None:
            self.weights = numpy_weights(self.q)
        return int(numpy_scores(self.weights, obs).argmax())

    def learn(self) -> None:
        obs, a, r, nxt, disc = self.memory.replay.sample(self.cfg.batch_size, self.batch_rng)
        with torch.no_grad():
            best = self.q(nxt).argmax(1, keepdim=True)
            y = r + disc * self.q_target(nxt).gather(1, best).squeeze(1)
        loss = F.smooth_l1_loss(self.q(obs).gather(1, a[:, None]).squeeze(1), y)
        self.opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
        self.opt.step()
        _soft_update(self.q_target, self.q, self.cfg.target_tau)


class SACAgent:
    """Discrete soft actor-critic; acts by sampling its policy while training, greedily otherwise."""

    def __init__(self, capacity: int, cfg: AgentConfig, streams: AgentStreams) -> None:
        self.cfg, self.rng, self.batch_rng = cfg, streams.explore, streams.replay
        self.memory = Memory(capacity, cfg)
        self.actor, self.q1, self.q2, self.t1, self.t2 = _seeded_nets(streams.init_seed, cfg.hidden, 5)
        self.weights: list[np.ndarray] | None = None
        self.t1.load_state_dict(self.q1.state_dict())
        self.t2.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.full((1,), math.log(cfg.init_alpha), requires_grad=True)
        lr = cfg.lr
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "q1": self.q1, "q2": self.q2, "t1": self.t1, "t2": self.t2}

    def remember(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, discount: float) -> None:
        """Store a transition; `discount` is γ^(requests until the next decision), 0 at the end of an episode."""
        if self.memory.add(obs, action, reward, next_obs, discount):
            self.learn()
            self.weights = None

    def refresh(self) -> None:
        """Forget the numpy copy of the acting network (after its parameters changed outside `learn`)."""
        self.weights = None

    def act(self, obs: np.ndarray, explore: bool = True) -> int:
        if self.weights is None:
            self.weights = numpy_weights(self.actor)
        logits = numpy_scores(self.weights, obs).astype(np.float64)
        if not explore:
            return int(logits.argmax())
        p = np.exp(logits - logits.max())
        return int(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum()).clip(0, len(p) - 1))

    def learn(self) -> None:
        obs, a, r, nxt, disc = self.memory.replay.sample(self.cfg.batch_size, self.batch_rng)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            logp_n = torch.log_softmax(self.actor(nxt), 1)
            q_n = torch.min(self.t1(nxt), self.t2(nxt))
            v_n = (logp_n.exp() * (q_n - alpha * logp_n)).sum(1)
            y = r + disc * v_n
        q1, q2 = self.q1(obs), self.q2(obs)
        critic = F.mse_loss(q1.gather(1, a[:, None]).squeeze(1), y) + F.mse_loss(q2.gather(1, a[:, None]).squeeze(1), y)
        self.critic_opt.zero_grad()
        critic.backward()
        self.critic_opt.step()
        logp = torch.log_softmax(self.actor(obs), 1)
        p = logp.exp()
        q_min = torch.min(q1, q2).detach()
        actor = (p * (alpha * logp - q_min)).sum(1).mean()
        self.actor_opt.zero_grad()
        actor.backward()
        self.actor_opt.step()
        entropy = -(p * logp).sum(1).detach()
        target = self.cfg.target_entropy_ratio * math.log(obs.shape[1])
        alpha_loss = (self.log_alpha * (entropy - target)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        _soft_update(self.t1, self.q1, self.cfg.target_tau)
        _soft_update(self.t2, self.q2, self.cfg.target_tau)


AGENTS.add("sac", SACAgent, "discrete soft actor-critic (Christodoulou 2019), as in Sun et al. 2023")
AGENTS.add("dqn", DQNAgent, "double DQN with soft target updates and linearly decaying ε-greedy exploration")


def make_agent(kind: str, capacity: int, cfg: AgentConfig, streams: Streams, role: Role = Role.EDGE,
               index: int = 0) -> Agent:
    """The registered agent `kind` for endpoint (role, index), drawing from that endpoint's streams."""
    return cast(Agent, AGENTS.create(kind, capacity, cfg, AgentStreams.of(streams, role, index)))


def learned_policies() -> list[str]:
    """Every learned policy name: the built-ins first, then `<agent>` and `fed-<agent>` for registered extras."""
    extra = [p for name in AGENTS for p in (name, f"fed-{name}") if p not in LEARNED]
    return [*LEARNED, *extra]
