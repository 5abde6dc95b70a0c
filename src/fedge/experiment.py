"""The configuration of a `fedge run` experiment, as strictly validated dataclasses.

YAML presets in `configs/` hold a subset of these keys; anything not given takes the defaults below, which are the
offline default run (DPMN against DFL on scikit-learn's digits, 20 devices, two label shards each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedge.config import ConfigError, check
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
    threads: int = 0  # torch intra-op threads; 0 = auto (1 for models under 200k parameters, else torch's default)

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

    def validate(self) -> None:
        from fedge.algorithms import ALGORITHMS

        check(self.rounds >= 1, f"rounds: must be >= 1, got {self.rounds}")
        check(self.eval_every >= 1, f"eval_every: must be >= 1, got {self.eval_every}")
        check(len(self.algorithms) >= 1, "algorithms: name at least one algorithm")
        for name in self.algorithms:
            if name not in ALGORITHMS:
                raise ConfigError(f"algorithms: unknown algorithm {name!r} (choose from {', '.join(ALGORITHMS)})")
        if self.bandwidth_classes:
            total = sum(c.fraction for c in self.bandwidth_classes)
            check(abs(total - 1.0) < 1e-6, f"bandwidth_classes: fractions sum to {total:g}, not 1")
