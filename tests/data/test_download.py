"""Download, extraction and normalisation helpers. "Downloads" here read local file:// URLs — no network."""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.data import cifar10, mnist
from fedge.data.download import download_file, extract_tar, file_digest, standardise
from fedge.data.idx import write_idx
from fedge.errors import DataError


def test_download_file_verifies_and_leaves_no_partial_file(tmp_path: Path) -> None:
    source = tmp_path / "src" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"hello world" * 100)
    digest = file_digest(source, 32)
    missing_url = (tmp_path / "nowhere" / "blob.bin").as_uri()
    dest = download_file([missing_url, source.as_uri()], tmp_path / "out" / "blob.bin", digest, "demo")
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(DataError, match=r"demo: could not download other\.bin .*checksum mismatch") as info:
        download_file([source.as_uri()], tmp_path / "out" / "other.bin", "0" * 64, "demo")
    assert "put the file in" in str(info.value)
    assert not (tmp_path / "out" / "other.bin").exists() and not (tmp_path / "out" / "other.bin.part").exists()


def test_load_mnist_download_path_fetches_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train-images-idx3-ubyte", 6), ("t10k-images-idx3-ubyte", 3)):
        write_idx(mirror / f"{name}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    for name, n in (("train-labels-idx1-ubyte", 6), ("t10k-labels-idx1-ubyte", 3)):
        write_idx(mirror / f"{name}.gz", rng.integers(0, 10, n, dtype=np.uint8))
    table = {p.name: file_digest(p, 64) for p in mirror.iterdir()}
    spec = dataclasses.replace(mnist._MNIST, mirrors=(mirror.as_uri() + "/",))
    monkeypatch.setattr(mnist, "_MNIST", spec)
    data = tmp_path / "data"
    with pytest.raises(DataError, match="pass --download"):
        mnist.load_mnist(data, checksums=table)
    ds = mnist.load_mnist(data, download=True, checksums=table)
    assert len(ds.x_train) == 6 and sorted(p.name for p in (data / "mnist").iterdir()) == sorted(table)
    bad = dict(table, **{"t10k-labels-idx1-ubyte.gz": "f" * 64})
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="could not download t10k-labels-idx1-ubyte.gz"):
        mnist.load_mnist(data, download=True, checksums=bad)


def test_load_cifar10_download_path_extracts_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH]:
            entry = {"data": np.full((2, 3072), 7, dtype=np.uint8), "labels": [1, 2]}
            payload = pickle.dumps(entry, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    monkeypatch.setattr(cifar10, "URLS", (archive.as_uri(),))
    table = {cifar10.ARCHIVE: file_digest(archive, 32)}
    ds = cifar10.load_cifar10(tmp_path / "data", download=True, checksums=table)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.y_test.tolist() == [1, 2]
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").is_file()


def test_load_emnist_download_path_extracts_split_from_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "mirror" / "gzip.zip"
    archive.parent.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(archive, "w") as zf:
        for part, n in (("train", 5), ("test", 2)):
            images = write_idx(staging / f"{part}-images.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            labels = write_idx(staging / f"{part}-labels.gz", rng.integers(0, 47, n, dtype=np.uint8))
            zf.write(images, f"gzip/emnist-balanced-{part}-images-idx3-ubyte.gz")
            zf.write(labels, f"gzip/emnist-balanced-{part}-labels-idx1-ubyte.gz")
    monkeypatch.setattr(mnist, "EMNIST_URLS", (archive.as_uri(),))
    table = {"gzip.zip": file_digest(archive, 32)}
    ds = mnist.load_emnist(tmp_path / "data", download=True, split="balanced", checksums=table)
    assert ds.name == "emnist_balanced" and ds.num_classes == 47 and ds.x_train.shape == (5, 1, 28, 28)
    assert ds.x_train.is_contiguous()
    assert (tmp_path / "data" / "emnist" / "emnist-balanced-test-labels-idx1-ubyte.gz").is_file()
    with pytest.raises(DataError, match="has no member gzip/emnist-byclass-train-images-idx3-ubyte.gz"):
        mnist.load_emnist(tmp_path / "data", download=True, split="byclass", checksums=table)


def test_extract_tar_refuses_escaping_members(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DataError, match="refusing to extract '../escaped.txt'"):
        extract_tar(archive, tmp_path / "out", "demo")
    assert not (tmp_path / "escaped.txt").exists()


def test_standardise_uses_training_statistics() -> None:
    train = torch.tensor([[[[0, 255]]], [[[0, 255]]]], dtype=torch.uint8)  # one channel, values 0 and 255
    test = torch.full((1, 1, 1, 2), 255, dtype=torch.uint8)
    x_train, x_test = standardise(train, test)
    assert abs(float(x_train.mean())) < 1e-6 and abs(float(x_train.std()) - 1) < 1e-6
    assert torch.allclose(x_test, x_train[0, 0, 0, 1].expand_as(x_test))  # same map, not the test's own stats
