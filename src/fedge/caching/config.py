"""Configuration of `fedge cache`: network, trace, cost model, soft hits and learned agents.

Every field has a default so a bare `fedge cache` works; YAML files under `configs/cache-*.yaml` and `--set key=value`
override them. Validation is strict: a bad value is a one-line `ConfigError` naming the key. Every number declares
its documented range with its type (see `fedge.config.Range`), checked by `fedge.config.build`; the `validate`
methods keep only checks that involve several fields or more than a range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fedge.config import (
    BelowOne,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    Seed,
    Share,
    Similarity,
    check,
)

HEURISTICS = ("lru", "lfu", "fifo", "random", "static", "belady", "sim-lfu", "dlfu")
LEARNED = ("sac", "dqn", "fed-sac", "fed-dqn")
POLICIES = HEURISTICS + LEARNED


@dataclass
class TraceConfig:
    """Where requests come from. `movielens`: ml-latest-small ratings in timestamp order (Harper & Konstan 2015);
    `synthetic`: Zipf(alpha) popularity with per-edge permutations and drift (Breslau et al. 1999)."""

    kind: Literal["movielens", "synthetic"] = "synthetic"
    data_dir: Path | None = None
    item_embeddings: Path | None = None
    episodes: PositiveInt = 10
    requests_per_episode: PositiveInt = 10000
    num_items: Annotated[int, Range(2)] = 1000
    zipf_alpha: NonNegativeFloat = 0.8
    edge_shuffle: Probability = 0.1
    drift_every: NonNegativeInt = 2000  # 0 = no drift
    drift_fraction: Probability = 0.05
    embedding_dim: PositiveInt = 16
    clusters: PositiveInt = 20


@dataclass
class NetworkConfig:
    """E edge servers with C items each and one cloud. `capacity` < 1 is a fraction of the catalogue, >= 1 an item
    count. Delays are per tier in milliseconds; with `cooperation` a miss is served by a neighbour edge holding the
    item before the cloud is asked."""

    edges: PositiveInt = 4
    capacity: PositiveFloat = 0.05
    cooperation: bool = True
    delay_edge_ms: NonNegativeFloat = 5.0
    delay_neighbour_ms: NonNegativeFloat = 20.0
    delay_cloud_ms: NonNegativeFloat = 100.0
    item_size_mb: NonNegativeFloat = 4.0

    def validate(self) -> None:
        check(self.capacity < 1 or float(self.capacity).is_integer(),
              f"capacity: must be a fraction < 1 or a whole number of items, got {self.capacity}")

    def capacity_items(self, num_items: int) -> int:
        """C in items; a ConfigError when it exceeds the catalogue."""
        cap = max(1, round(self.capacity * num_items)) if self.capacity < 1 else int(self.capacity)
        check(cap <= num_items, f"network.capacity: {cap} items exceeds the catalogue size {num_items}")
        return cap


@dataclass
class CostConfig:
    """Per-request system cost = w_sim·(1 − s)·[soft hit] + w_delay·delay_ms + w_miss·[miss] (Sun et al. 2023)."""

    w_sim: NonNegativeFloat = 1.0
    w_delay: NonNegativeFloat = 0.01
    w_miss: NonNegativeFloat = 1.0


@dataclass
class SoftHitConfig:
    """Recommendation on a miss: the most similar cached item (among the item's `neighbours` most similar) is offered
    and accepted with probability p(s) = max_prob·g(s) for s >= floor, else 0, where g is `function`:
    linear (s−floor)/(1−floor), power s^exponent, sigmoid 1/(1+exp(−steepness·(s−midpoint))), or step 1."""

    enabled: bool = True
    function: Literal["linear", "power", "sigmoid", "step"] = "linear"
    floor: Annotated[float, Range(-1, 1, high_open=True)] = 0.5  # a cosine similarity; linear divides by 1 − floor
    max_prob: Probability = 0.8
    exponent: PositiveFloat = 2.0
    steepness: NonNegativeFloat = 10.0  # acceptance rises with similarity
    midpoint: Similarity = 0.75  # a cosine similarity
    neighbours: PositiveInt = 20


@dataclass
class AgentConfig:
    """Learned agents (DQN, discrete SAC): small per-slot MLPs, trained online; federated variants FedAvg the
    agents' networks every `fed_every` episodes (McMahan et al. 2017), keeping `personal_layers` local. `gamma` is
    the discount per request (a decision step that spans n requests is discounted by gamma^n)."""

    hidden: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    gamma: BelowOne = 0.98
    centre_rate: Share = 0.01
    batch_size: PositiveInt = 32
    buffer_size: PositiveInt = 20000  # >= batch_size
    update_every: PositiveInt = 8
    warmup: NonNegativeInt = 200
    target_tau: Share = 0.01
    epsilon_start: Probability = 0.5
    epsilon_end: Probability = 0.02
    epsilon_decay_steps: PositiveInt = 5000
    target_entropy_ratio: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    init_alpha: PositiveFloat = 0.01
    short_window: PositiveInt = 50  # <= long_window
    long_window: PositiveInt = 500
    fed_every: PositiveInt = 1
    fed_weighting: Literal["uniform", "requests"] = "requests"
    personal_layers: bool = False

    def validate(self) -> None:
        check(self.buffer_size >= self.batch_size,
              f"buffer_size: must be >= batch_size, got {self.buffer_size} < {self.batch_size}")
        check(self.short_window <= self.long_window,
              f"short_window: must be <= long_window, got {self.short_window} > {self.long_window}")


@dataclass
class HeuristicConfig:
    """Settings of the heuristic policies: `decay_half_life` is the aging of `dlfu` (decayed similarity-aware LFU),
    in requests at the edge: a use that many requests ago counts half."""

    decay_half_life: PositiveInt = 125  # chosen on the drift config, tuning seeds 0, 100, 101 (docs/caching.md)


@dataclass
class RuntimeConfig:
    """How the federated agents' messages travel (fedge.messaging): `direct` hands tensors over, `loopback` encodes
    every message to bytes and decodes it on the receiving side (the same results, bit for bit). `heuristic_engine`:
    heuristics run in the fast simulator (`simulator`) or replay through the multi-edge environment the agents
    learn in (`env`); both give the same metrics to the last bit (tests/caching/test_engines.py)."""

    transport: Literal["direct", "loopback"] = "direct"
    heuristic_engine: Literal["simulator", "env"] = "simulator"


@dataclass
class CacheConfig:
    """Everything `fedge cache` needs; `policies` are compared on the same request stream."""

    policies: list[str] = field(default_factory=lambda: ["lru", "lfu", "fifo", "static", "sim-lfu", "belady"])
    seed: Seed = 0
    soft_ablation: bool = False
    trace: TraceConfig = field(default_factory=TraceConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    soft_hits: SoftHitConfig = field(default_factory=SoftHitConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    heuristics: HeuristicConfig = field(default_factory=HeuristicConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        """Value checks; policy names are checked where a run starts (`fedge.caching.runner.check_policies`), against
        the heuristics and every agent registered in `fedge.caching.agents.AGENTS`, so that agents a library
        registers are accepted."""
        check(len(self.policies) >= 1, "policies: give at least one policy")
