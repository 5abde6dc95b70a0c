"""Configuration of `fedge cache`: network, trace, cost model, soft hits and learned agents.

Every field has a default so a bare `fedge cache` works; YAML files under `configs/cache-*.yaml` and `--set key=value`
override them. Validation is strict: a bad value is a one-line `ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedge.config import check

HEURISTICS = ("lru", "lfu", "fifo", "random", "static", "belady", "sim-lfu")
LEARNED = ("sac", "dqn", "fed-sac", "fed-dqn")
POLICIES = HEURISTICS + LEARNED


@dataclass
class TraceConfig:
    """Where requests come from. `movielens`: ml-latest-small ratings in timestamp order (Harper & Konstan 2015);
    `synthetic`: Zipf(alpha) popularity with per-edge permutations and drift (Breslau et al. 1999)."""

    kind: Literal["movielens", "synthetic"] = "synthetic"
    data_dir: Path | None = None
    item_embeddings: Path | None = None
    episodes: int = 10
    requests_per_episode: int = 10000
    num_items: int = 1000
    zipf_alpha: float = 0.8
    edge_shuffle: float = 0.1
    drift_every: int = 2000
    drift_fraction: float = 0.05
    embedding_dim: int = 16
    clusters: int = 20

    def validate(self) -> None:
        check(self.episodes >= 1, f"episodes: must be >= 1, got {self.episodes}")
        check(self.requests_per_episode >= 1, f"requests_per_episode: must be >= 1, got {self.requests_per_episode}")
        check(self.num_items >= 2, f"num_items: must be >= 2, got {self.num_items}")
        check(self.zipf_alpha >= 0, f"zipf_alpha: must be >= 0, got {self.zipf_alpha}")
        check(0 <= self.edge_shuffle <= 1, f"edge_shuffle: must be in [0, 1], got {self.edge_shuffle}")
        check(self.drift_every >= 0, f"drift_every: must be >= 0 (0 = no drift), got {self.drift_every}")
        check(0 <= self.drift_fraction <= 1, f"drift_fraction: must be in [0, 1], got {self.drift_fraction}")
        check(self.embedding_dim >= 1, f"embedding_dim: must be >= 1, got {self.embedding_dim}")
        check(self.clusters >= 1, f"clusters: must be >= 1, got {self.clusters}")


@dataclass
class NetworkConfig:
    """E edge servers with C items each and one cloud. `capacity` < 1 is a fraction of the catalogue, >= 1 an item
    count. Delays are per tier in milliseconds; with `cooperation` a miss is served by a neighbour edge holding the
    item before the cloud is asked."""

    edges: int = 4
    capacity: float = 0.05
    cooperation: bool = True
    delay_edge_ms: float = 5.0
    delay_neighbour_ms: float = 20.0
    delay_cloud_ms: float = 100.0
    item_size_mb: float = 4.0

    def validate(self) -> None:
        check(self.edges >= 1, f"edges: must be >= 1, got {self.edges}")
        check(self.capacity > 0, f"capacity: must be > 0, got {self.capacity}")
        check(self.capacity < 1 or float(self.capacity).is_integer(),
              f"capacity: must be a fraction < 1 or a whole number of items, got {self.capacity}")
        for name in ("delay_edge_ms", "delay_neighbour_ms", "delay_cloud_ms", "item_size_mb"):
            check(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")

    def capacity_items(self, num_items: int) -> int:
        """C in items; a ConfigError when it exceeds the catalogue."""
        cap = max(1, round(self.capacity * num_items)) if self.capacity < 1 else int(self.capacity)
        check(cap <= num_items, f"network.capacity: {cap} items exceeds the catalogue size {num_items}")
        return cap


@dataclass
class CostConfig:
    """Per-request system cost = w_sim·(1 − s)·[soft hit] + w_delay·delay_ms + w_miss·[miss] (Sun et al. 2023)."""

    w_sim: float = 1.0
    w_delay: float = 0.01
    w_miss: float = 1.0

    def validate(self) -> None:
        for name in ("w_sim", "w_delay", "w_miss"):
            check(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")


@dataclass
class SoftHitConfig:
    """Recommendation on a miss: the most similar cached item (among the item's `neighbours` most similar) is offered
    and accepted with probability p(s) = max_prob·g(s) for s >= floor, else 0, where g is `function`:
    linear (s−floor)/(1−floor), power s^exponent, sigmoid 1/(1+exp(−steepness·(s−midpoint))), or step 1."""

    enabled: bool = True
    function: Literal["linear", "power", "sigmoid", "step"] = "linear"
    floor: float = 0.5
    max_prob: float = 0.8
    exponent: float = 2.0
    steepness: float = 10.0
    midpoint: float = 0.75
    neighbours: int = 20

    def validate(self) -> None:
        check(-1 <= self.floor < 1, f"floor: must be in [-1, 1), got {self.floor}")
        check(0 <= self.max_prob <= 1, f"max_prob: must be in [0, 1], got {self.max_prob}")
        check(self.exponent > 0, f"exponent: must be > 0, got {self.exponent}")
        check(self.neighbours >= 1, f"neighbours: must be >= 1, got {self.neighbours}")


@dataclass
class AgentConfig:
    """Learned agents (DQN, discrete SAC): small per-slot MLPs, trained online; federated variants FedAvg the
    agents' networks every `fed_every` episodes (McMahan et al. 2017), keeping `personal_layers` local. `gamma` is
    the discount per request (a decision step that spans n requests is discounted by gamma^n)."""

    hidden: int = 32
    lr: float = 1e-3
    gamma: float = 0.98
    centre_rate: float = 0.01
    batch_size: int = 32
    buffer_size: int = 20000
    update_every: int = 8
    warmup: int = 200
    target_tau: float = 0.01
    epsilon_start: float = 0.5
    epsilon_end: float = 0.02
    epsilon_decay_steps: int = 5000
    target_entropy_ratio: float = 0.3
    init_alpha: float = 0.01
    short_window: int = 50
    long_window: int = 500
    fed_every: int = 1
    fed_weighting: Literal["uniform", "requests"] = "requests"
    personal_layers: bool = False

    def validate(self) -> None:
        check(self.hidden >= 1, f"hidden: must be >= 1, got {self.hidden}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(0 <= self.gamma < 1, f"gamma: must be in [0, 1), got {self.gamma}")
        check(self.batch_size >= 1 and self.buffer_size >= self.batch_size,
              f"buffer_size: must be >= batch_size, got {self.buffer_size} < {self.batch_size}")
        check(self.update_every >= 1, f"update_every: must be >= 1, got {self.update_every}")
        check(0 < self.target_tau <= 1, f"target_tau: must be in (0, 1], got {self.target_tau}")
        check(0 < self.target_entropy_ratio < 1,
              f"target_entropy_ratio: must be in (0, 1), got {self.target_entropy_ratio}")
        check(1 <= self.short_window <= self.long_window, "short_window: must be >= 1 and <= long_window")
        check(self.init_alpha > 0, f"init_alpha: must be > 0, got {self.init_alpha}")
        check(0 < self.centre_rate <= 1, f"centre_rate: must be in (0, 1], got {self.centre_rate}")
        check(self.fed_every >= 1, f"fed_every: must be >= 1, got {self.fed_every}")


@dataclass
class RuntimeConfig:
    """How the federated agents' messages travel (fedge.messaging): `direct` hands tensors over, `loopback` encodes
    every message to bytes and decodes it on the receiving side (the same results, bit for bit)."""

    transport: Literal["direct", "loopback"] = "direct"


@dataclass
class CacheConfig:
    """Everything `fedge cache` needs; `policies` are compared on the same request stream."""

    policies: list[str] = field(default_factory=lambda: ["lru", "lfu", "fifo", "static", "sim-lfu", "belady"])
    seed: int = 0
    soft_ablation: bool = False
    trace: TraceConfig = field(default_factory=TraceConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    soft_hits: SoftHitConfig = field(default_factory=SoftHitConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        """Value checks; policy names are checked where a run starts (`fedge.caching.runner.check_policies`), against
        the heuristics and every agent registered in `fedge.caching.agents.AGENTS`, so that agents a library
        registers are accepted."""
        check(len(self.policies) >= 1, "policies: give at least one policy")
