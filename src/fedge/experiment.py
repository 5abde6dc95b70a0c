"""The configuration of a `fedge run` experiment, as strictly validated dataclasses.

YAML presets in `configs/` hold a subset of these keys; anything not given takes the defaults below, which are the
offline default run (DPMN against DFL on scikit-learn's digits, 20 devices, two label shards each).

Every number declares its documented range with its type (`Annotated[..., Range(...)]` or an alias such as
`PositiveFloat`, see `fedge.config`); `fedge.config.build` rejects non-finite and out-of-range values, so the
`validate` methods below keep only checks that involve several fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from fedge.config import (
    BelowOne,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    Share,
    Similarity,
    check,
)
from fedge.data.partition import PartitionSpec
from fedge.privacy.config import PrivacyConfig
from fedge.secure.config import SecureConfig


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    verify_checksums: bool = True  # false: accept files whose checksums differ from the published ones
    devices: Annotated[int, Range(2)] = 20
    partition: str = "shards:2"
    # of each device's training data, used by adaptive pruning's accuracy check
    val_fraction: Annotated[float, Range(0, 0.5, high_open=True)] = 0.1
    test_per_device: PositiveInt | None = None  # None: the global test size / devices (at least 20)
    # at most this many training samples per device (a random subset, after the validation split); None: all
    train_per_device: PositiveInt | None = None
    synthetic_alpha: NonNegativeFloat = 1.0
    synthetic_beta: NonNegativeFloat = 1.0
    image_size: Annotated[int, Range(8)] = 64  # ImageNet only: images are resized to this many pixels

    def validate(self) -> None:
        PartitionSpec.parse(self.partition)


@dataclass
class TrainConfig:
    model: str = "lenet5"
    epochs: PositiveInt = 2  # local epochs E per round
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 0.1
    momentum: BelowOne = 0.0
    weight_decay: NonNegativeFloat = 0.0
    batched: Literal["auto", "on", "off"] = "auto"  # train many devices at once with vmap (small models)
    # CPU threads; 0 = auto. The sequential trainer (convolutional models) trains this many devices at once, one per
    # thread (auto: every core); other work uses torch's intra-op threads (auto: 1 under 200k parameters)
    threads: NonNegativeInt = 0


@dataclass
class PruningConfig:
    target_density: Share = 0.5
    ramp_rounds: NonNegativeInt = 3  # density falls linearly from 1 to the target over this many rounds
    tolerance: NonNegativeFloat = 0.05  # pause when local validation accuracy drops by more; back off at twice this


@dataclass
class NeighbourConfig:
    delta: Similarity = 0.2  # cosine-similarity threshold δ
    k_min: NonNegativeInt = 1
    k_max: PositiveInt = 4  # also the degree k of the fixed topology used by dfl and dpmp
    probes_per_round: NonNegativeInt = 1  # exploration: stalest non-neighbour candidates re-scored each round
    bootstrap_probes: NonNegativeInt = 10  # candidates scored in the first round
    score_on: Literal["head", "all"] = "head"  # which parameters the similarity compares (see docs/dpmn.md)
    topology: Literal["full", "ring", "random-regular"] = "full"  # physical topology limiting candidates
    topology_degree: PositiveInt = 8  # degree of the physical topology when it is random-regular

    def validate(self) -> None:
        check(self.k_min <= self.k_max, f"neighbours.k_min/k_max: need k_min <= k_max, got {self.k_min}, {self.k_max}")


@dataclass
class RegularizerConfig:
    # λ in (1); 2λ is the proximal coefficient of an identical neighbour. λ and σ were chosen on validation data
    # (digits default, tuning seeds 100/101: benchmarks/dpmn_tuning.py, docs/dpmn.md); before issue 17: 0.2, 1e-3
    lam: NonNegativeFloat = 0.05
    # σ in J(z) = 1 − exp(−z/σ), z the mean squared difference on the overlap (docs/dpmn.md)
    sigma: PositiveFloat = 1e-4


@dataclass
class BandwidthClass:
    """A class of devices sharing a link speed: its share of devices, pruning target and neighbour cap."""

    fraction: Share
    target_density: Share
    k_max: PositiveInt


@dataclass
class ServerConfig:
    """Client-server aggregation (fedavg, hfl): FedAvg client sampling and weighting (McMahan et al. 2017)."""

    sample_fraction: Share = 1.0  # C: fraction of the online devices the server samples to train each round
    weighting: Literal["data_size", "uniform"] = "data_size"  # w_i = |D_i| (FedAvg) or 1


@dataclass
class HierarchyConfig:
    """hfl (HierFAVG, Liu et al. ICC 2020): κ1 = train.epochs local epochs per edge aggregation, κ2 edge
    aggregations per cloud aggregation, `clusters` edge servers (cluster leaders)."""

    clusters: PositiveInt = 4
    kappa2: PositiveInt = 2
    clustering: Literal["proximity", "assignment", "similarity"] = "proximity"
    # cluster of each device when clustering: assignment
    assignment: list[NonNegativeInt] = field(default_factory=list)
    reattach: Literal["nearest", "cloud"] = "nearest"  # where devices of a failed leader go for that round

    def validate(self) -> None:
        bad = [c for c in self.assignment if not 0 <= c < self.clusters]
        check(not bad, f"hierarchy.assignment: cluster {bad[0] if bad else ''} is not in [0, {self.clusters})")


@dataclass
class FaultConfig:
    """Seeded device and leader faults (fedge.runtimes.faults); all zero = no faults."""

    device_failure: BelowOne = 0.0  # per round, each live device misses the round with this probability
    exit_fraction: BelowOne = 0.0  # fraction of devices that leave for good, each at a uniformly drawn round
    late_join_fraction: BelowOne = 0.0  # fraction of devices that join late, each at a uniformly drawn round
    leader_failure: BelowOne = 0.0  # per round, each cluster leader (hfl edge server) is down with this probability


@dataclass
class LinkClass:
    """A class of devices sharing compute speed and link bandwidth (latency model)."""

    fraction: Share
    samples_per_second: PositiveFloat = 2000.0  # local training throughput (samples × epochs per second)
    uplink_mbps: PositiveFloat = 10.0
    downlink_mbps: PositiveFloat = 50.0


@dataclass
class LatencyConfig:
    """Simulated wall-clock time (fedge.runtimes.latency); off by default."""

    enabled: bool = False
    classes: list[LinkClass] = field(default_factory=lambda: [LinkClass(fraction=1.0)])
    straggler_probability: BelowOne = 0.0  # per round, a participant is slowed by `straggler_slowdown`
    straggler_slowdown: Annotated[float, Range(1)] = 5.0
    deadline_s: NonNegativeFloat = 0.0  # > 0: participants not done by then are dropped from the round
    backhaul_mbps: PositiveFloat = 100.0  # edge/cloud link shared by all traffic to the cloud
    backhaul_rtt_s: NonNegativeFloat = 0.05  # added once per round that uses the backhaul

    def validate(self) -> None:
        check(len(self.classes) >= 1, "latency.classes: give at least one class")
        total = sum(c.fraction for c in self.classes)
        check(abs(total - 1.0) < 1e-6, f"latency.classes: fractions sum to {total:g}, not 1")


@dataclass
class RuntimeConfig:
    """How messages travel (fedge.messaging): `direct` hands tensors over (fast), `loopback` encodes every message
    to bytes and decodes it on the receiving side (the same results, bit for bit; a check of the direct path)."""

    transport: Literal["direct", "loopback"] = "direct"


@dataclass
class ExperimentConfig:
    algorithms: list[str] = field(default_factory=lambda: ["dpmn", "dfl"])
    rounds: PositiveInt = 30
    seed: Seed = 0
    out: str = "runs/latest"
    payload_dtype: Literal["fp32", "fp16"] = "fp32"
    eval_every: PositiveInt = 1
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    neighbours: NeighbourConfig = field(default_factory=NeighbourConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    bandwidth_classes: list[BandwidthClass] = field(default_factory=list)
    server: ServerConfig = field(default_factory=ServerConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure: SecureConfig = field(default_factory=SecureConfig)

    def validate(self) -> None:
        """Value checks; algorithm names are checked against the registry by whoever runs them
        (`fedge.algorithms.ALGORITHMS.check`), so that algorithms registered by a library are accepted."""
        check(len(self.algorithms) >= 1, "algorithms: name at least one algorithm")
        if self.bandwidth_classes:
            total = sum(c.fraction for c in self.bandwidth_classes)
            check(abs(total - 1.0) < 1e-6, f"bandwidth_classes: fractions sum to {total:g}, not 1")
        self.secure.check_against(self.algorithms, self.data.devices, self.privacy.adaptive_clipping,
                                  self.privacy.mechanism == "user")
        if self.hierarchy.clustering == "assignment":
            check(len(self.hierarchy.assignment) == self.data.devices,
                  f"hierarchy.assignment: has {len(self.hierarchy.assignment)} entries, need one per device "
                  f"({self.data.devices})")
