"""CIFAR-10 (Krizhevsky 2009) from the canonical python pickle batches, as [n, 3, 32, 32] tensors.

The release `cifar-10-python.tar.gz` unpacks to `cifar-10-batches-py/` with `data_batch_1` … `data_batch_5` (10,000
images each, 50,000 train) and `test_batch` (10,000). Each batch is a pickled dict whose `data` is a uint8 array
[10000, 3072] (1024 red, then green, then blue values, row-major — i.e. already channel-first) and whose `labels` is a
list of ints in 0..9.

Safety: a pickle can run code when loaded. The loader verifies each batch's published md5 (torchvision's list) before
reading it, and reads with a restricted unpickler that only accepts the numpy array reconstruction the canonical
files use, so even an unverified file (`checksums={}`) cannot execute anything.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.data.base import ArrayDataset
from fedge.data.download import download_file, extract_tar, locate, standardise, verify_files
from fedge.errors import DataError

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    ARCHIVE: ARCHIVE_MD5,
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2; it only encodes a str
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild plain numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> (uint8 images [n, 3, 32, 32], int64 labels [n]); DataError naming the file."""
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({err})") from err
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise DataError(f"cifar10: {path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"cifar10: {path} holds data {data.dtype} {data.shape} and {len(labels)} labels, "
                        f"expected uint8 [n, 3072] and n labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"cifar10: {path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: Path | None, download: bool = False,
                 checksums: Mapping[str, str] | None = None) -> ArrayDataset:
    """CIFAR-10 from `data_dir/cifar-10-batches-py/` (or `data_dir` itself holding the batch files).

    `checksums=None` verifies the published md5 of every batch and the canonical sizes (50,000 + 10,000); pass a
    mapping of file name -> md5/sha256 to use other digests (`{}` disables verification). `download=True` fetches
    the md5-verified release tarball from the University of Toronto and unpacks it into `data_dir`.
    """
    names = [*TRAIN_BATCHES, TEST_BATCH]

    def missing_in(folder: Path) -> list[str]:
        return [n for n in names if not (folder / n).is_file()]

    folder, missing = locate(data_dir, BATCH_FOLDER, missing_in, "cifar10", download)
    table = CIFAR10_MD5 if checksums is None else checksums
    if missing:
        assert data_dir is not None
        archive = Path(data_dir) / ARCHIVE
        if not archive.is_file():
            download_file(URLS, archive, table.get(ARCHIVE), "cifar10")
        elif ARCHIVE in table:
            verify_files([archive], table, "cifar10")
        extract_tar(archive, Path(data_dir), "cifar10")
        still = missing_in(folder)
        if still:
            raise DataError(f"cifar10: {archive} did not provide {', '.join(still)}")
    paths = [folder / n for n in names]
    verify_files(paths, table, "cifar10")
    batches = [read_batch(p) for p in paths]
    x_train = torch.from_numpy(np.concatenate([b[0] for b in batches[:-1]]))
    y_train = torch.from_numpy(np.concatenate([b[1] for b in batches[:-1]]))
    x_test, y_test = torch.from_numpy(batches[-1][0]), torch.from_numpy(batches[-1][1])
    if checksums is None and (len(x_train), len(x_test)) != (50_000, 10_000):
        raise DataError(f"cifar10: {folder} holds {len(x_train)} train and {len(x_test)} test images, "
                        f"the canonical batches hold 50000 and 10000")
    x_train, x_test = standardise(x_train, x_test)
    return ArrayDataset("cifar10", x_train, y_train, x_test, y_test, num_classes=10)
