"""Dataset loaders (real file formats) and the federation builder.

`DATASETS` maps a config name to `(data_dir, data_config) -> ArrayDataset`. `synthetic` is generated per device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedge.data.base import ArrayDataset

if TYPE_CHECKING:
    from fedge.data.federated import FederatedData
    from fedge.experiment import DataConfig


def _checksums(cfg: DataConfig) -> dict[str, str] | None:
    """None = verify the published checksums; {} = verification switched off by `data.verify_checksums: false`."""
    return None if cfg.verify_checksums else {}


def _digits(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.digits import load_digits

    return load_digits()


def _mnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_mnist

    return load_mnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


def _fmnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_fashion_mnist

    return load_fashion_mnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


def _emnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_cemnist

    return load_cemnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


def _cifar10(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.cifar10 import load_cifar10

    return load_cifar10(data_dir, download=cfg.download, checksums=_checksums(cfg))


def _imagenet(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.imagenet import load_imagenet

    return load_imagenet(data_dir, download=cfg.download, image_size=cfg.image_size)


DATASETS: dict[str, Callable[[Path | None, DataConfig], ArrayDataset]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fmnist": _fmnist,
    "emnist": _emnist,
    "cifar10": _cifar10,
    "imagenet": _imagenet,
}


def synthetic_federation(cfg: DataConfig, generator: torch.Generator) -> FederatedData:
    """Synthetic(α, β) of FedProx: each device's data generated from its own model, split train/val/test."""
    from fedge.data.federated import DeviceData, FederatedData, split_validation
    from fedge.data.synthetic import generate_synthetic

    dataset, train_parts, test_parts = generate_synthetic(cfg.devices, cfg.synthetic_alpha, cfg.synthetic_beta,
                                                          generator)
    devices = []
    for train_idx, test_idx in zip(train_parts, test_parts):
        xt, yt, xv, yv = split_validation(dataset.x_train[train_idx], dataset.y_train[train_idx],
                                           cfg.val_fraction, generator)
        devices.append(DeviceData(xt, yt, xv, yv, dataset.x_test[test_idx], dataset.y_test[test_idx]))
    return FederatedData("synthetic", devices, dataset.num_classes, dataset.input_shape)
