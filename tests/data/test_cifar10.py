"""CIFAR-10 loader on a tiny batch set written as real python pickles (protocol 2, like the release)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.data.cifar10 import TEST_BATCH, TRAIN_BATCHES, load_cifar10, read_batch
from fedge.data.download import file_digest
from fedge.errors import DataError


def _write_batches(folder: Path, per_batch: int = 4) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate([*TRAIN_BATCHES, TEST_BATCH]):
        entry = {
            "batch_label": f"batch {i}",
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
        written[name] = entry
    return written


def test_read_batch_layout_is_channel_first(tmp_path: Path) -> None:
    written = _write_batches(tmp_path)
    images, labels = read_batch(tmp_path / "data_batch_2")
    row = written["data_batch_2"]["data"][1]
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[1, 0].ravel(), row[:1024])  # red plane first
    assert np.array_equal(images[1, 2, 31], row[3072 - 32:])  # last row of the blue plane
    assert labels.tolist() == written["data_batch_2"]["labels"]


def test_load_cifar10_shapes_labels_and_normalisation(tmp_path: Path) -> None:
    written = _write_batches(tmp_path / "cifar-10-batches-py")
    ds = load_cifar10(tmp_path, checksums={})
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10
    expected = sum((written[n]["labels"] for n in TRAIN_BATCHES), [])
    assert ds.y_train.tolist() == expected
    channel_mean = ds.x_train.mean(dim=(0, 2, 3))
    channel_std = ds.x_train.transpose(0, 1).reshape(3, -1).std(dim=1)
    assert torch.allclose(channel_mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(channel_std, torch.ones(3), atol=1e-3)


def test_data_dir_may_be_the_batch_folder(tmp_path: Path) -> None:
    _write_batches(tmp_path)
    assert len(load_cifar10(tmp_path, checksums={}).x_test) == 4


def test_default_checksums_reject_non_canonical_batches(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match=r"checksum mismatch for .*data_batch_1 \(md5"):
        load_cifar10(tmp_path)


def test_own_checksums_and_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    table = {n: file_digest(folder / n, 64) for n in [*TRAIN_BATCHES, TEST_BATCH]}
    assert load_cifar10(tmp_path, checksums=table).name == "cifar10"
    with open(folder / TEST_BATCH, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(DataError, match=r"checksum mismatch for .*test_batch"):
        load_cifar10(tmp_path, checksums=table)


def test_missing_batches_name_files_and_folder(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path, checksums={})
    message = str(info.value)
    assert "data_batch_4" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_3" not in message


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_pickle_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    with open(folder / "data_batch_1", "wb") as handle:
        pickle.dump({"data": _Evil(), "labels": []}, handle, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_1 is not a CIFAR-10 python batch .*not allowed"):
        load_cifar10(tmp_path, checksums={})


def test_wrong_shape_is_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), dtype=np.uint8), "labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(DataError, match="expected uint8"):
        load_cifar10(tmp_path, checksums={})
