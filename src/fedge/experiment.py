"""The configuration of a `fedge run` experiment, as strictly validated dataclasses.

YAML presets in `configs/` hold a subset of these keys; anything not given takes the defaults below, which are the
offline default run (DPMN against DFL on scikit-learn's digits, 20 devices, two label shards each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedge.config import check
from fedge.data.partition import PartitionSpec


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    verify_checksums: bool = True  # false: accept files whose checksums differ from the published ones
    devices: int = 20
    partition: str = "shards:2"
    val_fraction: float = 0.1  # of each device's training data, used by adaptive pruning's accuracy check
    test_per_device: int | None = None
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    image_size: int = 64  # ImageNet only: images are resized to this many pixels

    def validate(self) -> None:
        check(self.devices >= 2, f"data.devices: need at least 2 devices, got {self.devices}")
        check(0.0 <= self.val_fraction < 0.5, f"data.val_fraction: {self.val_fraction} is not in [0, 0.5)")
        PartitionSpec.parse(self.partition)
        check(self.synthetic_alpha >= 0 and self.synthetic_beta >= 0, "data.synthetic_alpha/beta must be >= 0")


@dataclass
class TrainConfig:
    model: str = "lenet5"
    epochs: int = 2  # local epochs E per round
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batched: Literal["auto", "on", "off"] = "auto"  # train many devices at once with vmap (small models)
    # CPU threads; 0 = auto. The sequential trainer (convolutional models) trains this many devices at once, one per
    # thread (auto: every core); other work uses torch's intra-op threads (auto: 1 under 200k parameters)
    threads: int = 0

    def validate(self) -> None:
        check(self.epochs >= 1, f"train.epochs: must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"train.batch_size: must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"train.lr: must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, f"train.momentum: must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"train.weight_decay: must be >= 0, got {self.weight_decay}")
        check(self.threads >= 0, f"train.threads: must be >= 0, got {self.threads}")


@dataclass
class PruningConfig:
    target_density: float = 0.5
    ramp_rounds: int = 3  # density falls linearly from 1 to the target over this many rounds
    tolerance: float = 0.05  # pause when local validation accuracy drops by more; back off at twice this

    def validate(self) -> None:
        check(0 < self.target_density <= 1, f"pruning.target_density: {self.target_density} is not in (0, 1]")
        check(self.ramp_rounds >= 0, f"pruning.ramp_rounds: must be >= 0, got {self.ramp_rounds}")
        check(self.tolerance >= 0, f"pruning.tolerance: must be >= 0, got {self.tolerance}")


@dataclass
class NeighbourConfig:
    delta: float = 0.2  # cosine-similarity threshold δ
    k_min: int = 1
    k_max: int = 4  # also the degree k of the fixed topology used by dfl and dpmp
    probes_per_round: int = 1  # exploration: stalest non-neighbour candidates re-scored each round
    bootstrap_probes: int = 10  # candidates scored in the first round
    score_on: Literal["head", "all"] = "head"  # which parameters the similarity compares (see docs/dpmn.md)
    topology: Literal["full", "ring", "random-regular"] = "full"  # physical topology limiting candidates
    topology_degree: int = 8  # degree of the physical topology when it is random-regular

    def validate(self) -> None:
        check(-1 <= self.delta <= 1, f"neighbours.delta: {self.delta} is not in [-1, 1]")
        check(0 <= self.k_min <= self.k_max, f"neighbours.k_min/k_max: need 0 <= k_min <= k_max, "
              f"got {self.k_min}, {self.k_max}")
        check(self.k_max >= 1, f"neighbours.k_max: must be >= 1, got {self.k_max}")
        check(self.probes_per_round >= 0 and self.bootstrap_probes >= 0, "neighbours.probes must be >= 0")


@dataclass
class RegularizerConfig:
    lam: float = 0.2  # λ in (1); 2λ is the proximal coefficient of an identical neighbour
    sigma: float = 0.001  # σ in J(z) = 1 − exp(−z/σ), z the mean squared difference on the overlap (docs/dpmn.md)

    def validate(self) -> None:
        check(self.lam >= 0, f"regularizer.lam: must be >= 0, got {self.lam}")
        check(self.sigma > 0, f"regularizer.sigma: must be > 0, got {self.sigma}")


@dataclass
class BandwidthClass:
    """A class of devices sharing a link speed: its share of devices, pruning target and neighbour cap."""

    fraction: float
    target_density: float
    k_max: int

    def validate(self) -> None:
        check(0 < self.fraction <= 1, f"fraction: {self.fraction} is not in (0, 1]")
        check(0 < self.target_density <= 1, f"target_density: {self.target_density} is not in (0, 1]")
        check(self.k_max >= 1, f"k_max: must be >= 1, got {self.k_max}")


@dataclass
class ServerConfig:
    """Client-server aggregation (fedavg, hfl): FedAvg client sampling and weighting (McMahan et al. 2017)."""

    sample_fraction: float = 1.0  # C: fraction of the online devices the server samples to train each round
    weighting: Literal["data_size", "uniform"] = "data_size"  # w_i = |D_i| (FedAvg) or 1

    def validate(self) -> None:
        check(0 < self.sample_fraction <= 1, f"server.sample_fraction: {self.sample_fraction} is not in (0, 1]")


@dataclass
class HierarchyConfig:
    """hfl (HierFAVG, Liu et al. ICC 2020): κ1 = train.epochs local epochs per edge aggregation, κ2 edge
    aggregations per cloud aggregation, `clusters` edge servers (cluster leaders)."""

    clusters: int = 4
    kappa2: int = 2
    clustering: Literal["proximity", "assignment", "similarity"] = "proximity"
    assignment: list[int] = field(default_factory=list)  # cluster of each device when clustering: assignment
    reattach: Literal["nearest", "cloud"] = "nearest"  # where devices of a failed leader go for that round

    def validate(self) -> None:
        check(self.clusters >= 1, f"hierarchy.clusters: must be >= 1, got {self.clusters}")
        check(self.kappa2 >= 1, f"hierarchy.kappa2: must be >= 1, got {self.kappa2}")
        bad = [c for c in self.assignment if not 0 <= c < self.clusters]
        check(not bad, f"hierarchy.assignment: cluster {bad[0] if bad else ''} is not in [0, {self.clusters})")


@dataclass
class FaultConfig:
    """Seeded device and leader faults (fedge.runtimes.faults); all zero = no faults."""

    device_failure: float = 0.0  # per round, each live device misses the round with this probability
    exit_fraction: float = 0.0  # fraction of devices that leave for good, each at a uniformly drawn round
    late_join_fraction: float = 0.0  # fraction of devices that join late, each at a uniformly drawn round
    leader_failure: float = 0.0  # per round, each cluster leader (hfl edge server) is down with this probability

    def validate(self) -> None:
        for name in ("device_failure", "exit_fraction", "late_join_fraction", "leader_failure"):
            value = getattr(self, name)
            check(0 <= value < 1, f"faults.{name}: {value} is not in [0, 1)")


@dataclass
class LinkClass:
    """A class of devices sharing compute speed and link bandwidth (latency model)."""

    fraction: float
    samples_per_second: float = 2000.0  # local training throughput (samples × epochs per second)
    uplink_mbps: float = 10.0
    downlink_mbps: float = 50.0

    def validate(self) -> None:
        check(0 < self.fraction <= 1, f"fraction: {self.fraction} is not in (0, 1]")
        check(self.samples_per_second > 0 and self.uplink_mbps > 0 and self.downlink_mbps > 0,
              "samples_per_second/uplink_mbps/downlink_mbps must be > 0")


@dataclass
class LatencyConfig:
    """Simulated wall-clock time (fedge.runtimes.latency); off by default."""

    enabled: bool = False
    classes: list[LinkClass] = field(default_factory=lambda: [LinkClass(fraction=1.0)])
    straggler_probability: float = 0.0  # per round, a participant is slowed by `straggler_slowdown`
    straggler_slowdown: float = 5.0
    deadline_s: float = 0.0  # > 0: participants not done by then are dropped from the round
    backhaul_mbps: float = 100.0  # edge/cloud link shared by all traffic to the cloud
    backhaul_rtt_s: float = 0.05  # added once per round that uses the backhaul

    def validate(self) -> None:
        check(len(self.classes) >= 1, "latency.classes: give at least one class")
        total = sum(c.fraction for c in self.classes)
        check(abs(total - 1.0) < 1e-6, f"latency.classes: fractions sum to {total:g}, not 1")
        check(0 <= self.straggler_probability < 1, f"latency.straggler_probability: {self.straggler_probability}"
              " is not in [0, 1)")
        check(self.straggler_slowdown >= 1, f"latency.straggler_slowdown: must be >= 1, got "
              f"{self.straggler_slowdown}")
        check(self.deadline_s >= 0, f"latency.deadline_s: must be >= 0, got {self.deadline_s}")
        check(self.backhaul_mbps > 0 and self.backhaul_rtt_s >= 0, "latency.backhaul_mbps must be > 0, rtt >= 0")


@dataclass
class RuntimeConfig:
    """How messages travel (fedge.messaging): `direct` hands tensors over (fast), `loopback` encodes every message
    to bytes and decodes it on the receiving side (the same results, bit for bit; a check of the direct path)."""

    transport: Literal["direct", "loopback"] = "direct"


@dataclass
class ExperimentConfig:
    algorithms: list[str] = field(default_factory=lambda: ["dpmn", "dfl"])
    rounds: int = 30
    seed: int = 0
    out: str = "runs/latest"
    payload_dtype: Literal["fp32", "fp16"] = "fp32"
    eval_every: int = 1
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

    def validate(self) -> None:
        """Value checks; algorithm names are checked against the registry by whoever runs them
        (`fedge.algorithms.ALGORITHMS.check`), so that algorithms registered by a library are accepted."""
        check(self.rounds >= 1, f"rounds: must be >= 1, got {self.rounds}")
        check(self.eval_every >= 1, f"eval_every: must be >= 1, got {self.eval_every}")
        check(len(self.algorithms) >= 1, "algorithms: name at least one algorithm")
        if self.bandwidth_classes:
            total = sum(c.fraction for c in self.bandwidth_classes)
            check(abs(total - 1.0) < 1e-6, f"bandwidth_classes: fractions sum to {total:g}, not 1")
        if self.hierarchy.clustering == "assignment":
            check(len(self.hierarchy.assignment) == self.data.devices,
                  f"hierarchy.assignment: has {len(self.hierarchy.assignment)} entries, need one per device "
                  f"({self.data.devices})")
