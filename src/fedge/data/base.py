"""The in-memory dataset every loader returns, and the helpers loaders share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from fedge.errors import DataError


@dataclass
class ArrayDataset:
    """A labelled dataset held as tensors.

    `x_*` are float32 with a leading sample dimension ([n, C, H, W] for images, [n, F] for features), already
    scaled (images to [0, 1] then normalised per channel); `y_*` are int64 class labels in [0, num_classes).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        """Every loader's output meets the same contract, so a mismatch is a one-line error here rather than a shape
        error deep inside a model."""
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise DataError(f"{self.name}: features and labels differ in length (train {len(self.x_train)} vs "
                            f"{len(self.y_train)}, test {len(self.x_test)} vs {len(self.y_test)})")
        if tuple(self.x_train.shape[1:]) != tuple(self.x_test.shape[1:]):
            raise DataError(f"{self.name}: training samples have shape {list(self.x_train.shape[1:])} but test samples "
                            f"{list(self.x_test.shape[1:])}; both splits must have the same shape")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_files(folder: Path | None, names: list[str], dataset: str) -> Path:
    """Return `folder` if it holds every file in `names`, else raise a one-line DataError saying what to put where."""
    if folder is None:
        raise DataError(f"{dataset}: no --data-dir given; put {', '.join(names)} in a folder and pass it")
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataError(f"{dataset}: missing {', '.join(missing)} in {folder} (put the files there or pass --download)")
    return folder
