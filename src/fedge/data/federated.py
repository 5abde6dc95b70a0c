"""Per-device data of a federation: each device's train/validation/test tensors, built from a config.

Array datasets are partitioned (`fedge.data.partition`) and given personalized test sets; the Synthetic(α, β)
benchmark generates each device's data itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedge.config import ConfigError
from fedge.core.streams import generator as stream_generator
from fedge.data.base import ArrayDataset
from fedge.data.partition import PartitionSpec, partition, personalized_test_indices
from fedge.data.registry import DATASETS

if TYPE_CHECKING:  # annotations only: fedge.experiment imports fedge.data.partition
    from fedge.experiment import DataConfig


@dataclass
class DeviceData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class FederatedData:
    name: str
    devices: list[DeviceData]
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def train_sizes(self) -> torch.Tensor:
        return torch.tensor([len(d.y_train) for d in self.devices])

    def label_sets(self) -> list[set[int]]:
        return [set(torch.unique(d.y_train).tolist()) for d in self.devices]


def split_validation(x: torch.Tensor, y: torch.Tensor, fraction: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    n_val = int(round(len(y) * fraction)) if fraction > 0 else 0
    n_val = min(n_val, len(y) - 1)
    perm = torch.randperm(len(y), generator=generator)
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def cap_training(xt: torch.Tensor, yt: torch.Tensor, limit: int | None, seed: int,
                 device: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`data.train_per_device`: a random subset of at most `limit` training samples (order kept), drawn from the
    device's own stream, so the partition, validation and test sets, and the other devices, stay as without it."""
    if limit is None or len(yt) <= limit:
        return xt, yt
    keep = torch.randperm(len(yt), generator=stream_generator(seed, "train_per_device", device))[:limit]
    keep = keep.sort().values
    return xt[keep], yt[keep]


def from_arrays(dataset: ArrayDataset, cfg: DataConfig, generator: torch.Generator) -> FederatedData:
    spec = PartitionSpec.parse(cfg.partition)
    seed = generator.initial_seed() & (2**63 - 1)
    parts = partition(dataset.y_train, cfg.devices, spec, generator)
    tests = personalized_test_indices(dataset.y_train, parts, dataset.y_test, generator, cfg.test_per_device)
    devices = []
    for number, (train_idx, test_idx) in enumerate(zip(parts, tests)):
        xt, yt, xv, yv = split_validation(dataset.x_train[train_idx], dataset.y_train[train_idx],
                                           cfg.val_fraction, generator)
        xt, yt = cap_training(xt, yt, cfg.train_per_device, seed, number)
        devices.append(DeviceData(xt, yt, xv, yv, dataset.x_test[test_idx], dataset.y_test[test_idx]))
    return FederatedData(dataset.name, devices, dataset.num_classes, dataset.input_shape)


def synthetic_federation(cfg: DataConfig, generator: torch.Generator) -> FederatedData:
    """Synthetic(α, β) of FedProx: each device's data generated from its own model, split train/val/test."""
    from fedge.data.synthetic import generate_synthetic

    dataset, train_parts, test_parts = generate_synthetic(cfg.devices, cfg.synthetic_alpha, cfg.synthetic_beta,
                                                          generator)
    seed = generator.initial_seed() & (2**63 - 1)
    devices = []
    for number, (train_idx, test_idx) in enumerate(zip(train_parts, test_parts, strict=True)):
        xt, yt, xv, yv = split_validation(dataset.x_train[train_idx], dataset.y_train[train_idx],
                                           cfg.val_fraction, generator)
        xt, yt = cap_training(xt, yt, cfg.train_per_device, seed, number)
        devices.append(DeviceData(xt, yt, xv, yv, dataset.x_test[test_idx], dataset.y_test[test_idx]))
    return FederatedData("synthetic", devices, dataset.num_classes, dataset.input_shape)


def load_federated(cfg: DataConfig, seed: int) -> FederatedData:
    """Load/generate the configured dataset and split it over `cfg.devices` devices, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    if cfg.dataset == "synthetic":
        return synthetic_federation(cfg, generator)
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {cfg.dataset!r} (choose from synthetic, "
                          f"{', '.join(DATASETS)})")
    data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else None
    loader = DATASETS.get(cfg.dataset).builder
    return from_arrays(loader(data_dir, cfg), cfg, generator)
