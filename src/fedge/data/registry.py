"""The registry of datasets `fedge run` can partition over devices: name -> loader(data_dir, DataConfig).

A loader returns the whole labelled dataset as an `ArrayDataset` (train and test tensors); `fedge.data.federated`
partitions it. `synthetic` is not here: it is generated per device (fedge.data.federated.synthetic_federation).
Libraries add their own with `@DATASETS.register("name", "description")` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedge.data.base import ArrayDataset
from fedge.registry import Registry

if TYPE_CHECKING:  # fedge.experiment imports fedge.data.partition, whose package imports this module
    from fedge.experiment import DataConfig

Loader = Callable[[Path | None, "DataConfig"], ArrayDataset]
DATASETS: Registry[Loader] = Registry("dataset")


def _checksums(cfg: DataConfig) -> dict[str, str] | None:
    """None = verify the published checksums; {} = verification switched off by `data.verify_checksums: false`."""
    return None if cfg.verify_checksums else {}


@DATASETS.register("digits", "scikit-learn's bundled 8x8 handwritten digits (offline)")
def _digits(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.digits import load_digits

    return load_digits()


@DATASETS.register("mnist", "MNIST, the four IDX files")
def _mnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_mnist

    return load_mnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


@DATASETS.register("fmnist", "Fashion-MNIST, the four IDX files")
def _fmnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_fashion_mnist

    return load_fashion_mnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


@DATASETS.register("emnist", "EMNIST (balanced)")
def _emnist(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.mnist import load_cemnist

    return load_cemnist(data_dir, download=cfg.download, checksums=_checksums(cfg))


@DATASETS.register("cifar10", "CIFAR-10, the Python pickles")
def _cifar10(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.cifar10 import load_cifar10

    return load_cifar10(data_dir, download=cfg.download, checksums=_checksums(cfg))


@DATASETS.register("imagenet", "ImageNet-style class folders")
def _imagenet(data_dir: Path | None, cfg: DataConfig) -> ArrayDataset:
    from fedge.data.imagenet import load_imagenet

    return load_imagenet(data_dir, download=cfg.download, image_size=cfg.image_size)


__all__ = ["DATASETS", "Loader"]
