"""IDX reading/writing and the MNIST / Fashion-MNIST / EMNIST loaders on tiny files written in the real format."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.data.base import ArrayDataset, sha256_file
from fedge.data.download import file_digest
from fedge.data.idx import read_idx, write_idx
from fedge.data.mnist import load_cemnist, load_emnist, load_fashion_mnist, load_mnist
from fedge.errors import DataError

MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _write_set(folder: Path, names: tuple[str, ...], n_train: int = 12, n_test: int = 5, classes: int = 10,
               gz: bool = True, label_offset: int = 0) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {
        names[0]: _images(n_train, 2),
        names[1]: (rng.integers(0, classes, n_train) + label_offset).astype(np.uint8),
        names[2]: _images(n_test, 3),
        names[3]: (rng.integers(0, classes, n_test) + label_offset).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if gz else name), array)
    return arrays


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.shape == (2, 3, 4)
    assert np.array_equal(back.numpy(), array)


def test_idx_header_is_big_endian_per_spec(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "labels-idx1-ubyte", np.array([7, 1, 3], dtype=np.uint8)).read_bytes()
    assert raw == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 1, 3])


@pytest.mark.parametrize("payload,needle", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "holds 1 bytes"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated"),
])
def test_idx_malformed_is_data_error(tmp_path: Path, payload: bytes, needle: str) -> None:
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_real_format(tmp_path: Path, gz: bool) -> None:
    arrays = _write_set(tmp_path / "mnist", MNIST_NAMES, gz=gz)
    ds = load_mnist(tmp_path, checksums={})
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.equal(ds.y_train, torch.from_numpy(arrays[MNIST_NAMES[1]]).long())
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    # the pixel order is kept: standardisation is an increasing affine map of the raw values
    raw = torch.from_numpy(arrays[MNIST_NAMES[2]]).float()
    assert torch.corrcoef(torch.stack([raw.flatten(), ds.x_test.flatten()]))[0, 1] > 0.9999


def test_data_dir_may_hold_the_files_directly_and_mix_gz_and_raw(tmp_path: Path) -> None:
    _write_set(tmp_path, MNIST_NAMES, gz=True)
    for name in MNIST_NAMES[2:]:  # replace the test files by uncompressed ones
        (tmp_path / f"{name}.gz").unlink()
    write_idx(tmp_path / MNIST_NAMES[2], _images(4, 5))
    write_idx(tmp_path / MNIST_NAMES[3], np.array([3, 1, 4, 1], dtype=np.uint8))
    ds = load_mnist(tmp_path, checksums={})
    assert len(ds.x_train) == 12 and ds.y_test.tolist() == [3, 1, 4, 1]


def test_default_checksums_reject_non_canonical_files(tmp_path: Path) -> None:
    _write_set(tmp_path / "mnist", MNIST_NAMES)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value) and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)


def test_own_checksums_md5_and_sha256(tmp_path: Path) -> None:
    folder = tmp_path / "fashion_mnist"
    _write_set(folder, MNIST_NAMES)
    table = {f"{n}.gz": sha256_file(folder / f"{n}.gz") for n in MNIST_NAMES[:2]}
    table.update({f"{n}.gz": file_digest(folder / f"{n}.gz", 32) for n in MNIST_NAMES[2:]})
    assert load_fashion_mnist(tmp_path, checksums=table).name == "fashion_mnist"
    table["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match=r"checksum mismatch for .*t10k-labels-idx1-ubyte\.gz"):
        load_fashion_mnist(tmp_path, checksums=table)


def test_missing_files_name_files_and_folder(tmp_path: Path) -> None:
    _write_set(tmp_path / "mnist", MNIST_NAMES)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, checksums={})
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and str(tmp_path / "mnist") in message
    assert "train-images" not in message and "\n" not in message
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist(None)


def test_label_out_of_range_and_count_mismatch(tmp_path: Path) -> None:
    _write_set(tmp_path / "mnist", MNIST_NAMES)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="labels outside"):
        load_mnist(tmp_path, checksums={})
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="11 labels for 12 images"):
        load_mnist(tmp_path, checksums={})


def _emnist_names(split: str) -> tuple[str, ...]:
    return tuple(f"emnist-{split}-{p}-{k}-idx{3 if k == 'images' else 1}-ubyte"
                 for p in ("train", "test") for k in ("images", "labels"))


def test_emnist_byclass_is_transposed_upright(tmp_path: Path) -> None:
    names = _emnist_names("byclass")
    _write_set(tmp_path / "emnist", names, classes=62)
    stored = np.zeros((3, 28, 28), dtype=np.uint8)
    stored[:, 5, 2] = 255  # stored transposed: the upright image has its bright pixel at row 2, column 5
    write_idx(tmp_path / "emnist" / f"{names[2]}.gz", stored)
    write_idx(tmp_path / "emnist" / f"{names[3]}.gz", np.array([0, 61, 30], dtype=np.uint8))
    ds = load_cemnist(tmp_path, checksums={})
    assert ds.name == "emnist_byclass" and ds.num_classes == 62
    flat = int(ds.x_test[0, 0].flatten().argmax())
    assert divmod(flat, 28) == (2, 5)
    assert ds.y_test.tolist() == [0, 61, 30]


def test_emnist_letters_labels_shift_and_canonical_counts(tmp_path: Path) -> None:
    _write_set(tmp_path / "emnist", _emnist_names("letters"), classes=26, label_offset=1)
    ds = load_emnist(tmp_path, split="letters", checksums={})
    assert ds.num_classes == 26 and int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) <= 25
    with pytest.raises(DataError, match="canonical file has 124800"):
        load_emnist(tmp_path, split="letters")  # canonical mode enforces the published split sizes
    with pytest.raises(DataError, match="unknown split"):
        load_emnist(tmp_path, split="bogus")


def test_emnist_missing_names_canonical_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_emnist(tmp_path)
    assert "emnist-byclass-train-images-idx3-ubyte" in str(info.value)
    assert str(tmp_path / "emnist") in str(info.value)


def test_train_and_test_images_of_different_sizes_are_refused(tmp_path: Path) -> None:
    """Issue 18: 28x28 training and 20x20 test images loaded, then the model failed with a shape traceback."""
    folder = tmp_path / "fashion_mnist"
    _write_set(folder, MNIST_NAMES)
    write_idx(folder / f"{MNIST_NAMES[2]}.gz", np.zeros((5, 20, 20), dtype=np.uint8))
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path, checksums={})
    message = str(info.value)
    assert "holds 28x28 images but" in message and "t10k-images-idx3-ubyte.gz holds 20x20" in message
    write_idx(folder / f"{MNIST_NAMES[2]}.gz", np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(folder / f"{MNIST_NAMES[3]}.gz", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError, match="holds no images"):
        load_fashion_mnist(tmp_path, checksums={})


def test_every_dataset_checks_that_its_splits_match() -> None:
    """The contract every loader's result meets (ArrayDataset), as a one-line DataError."""
    with pytest.raises(DataError, match=r"training samples have shape \[1, 8, 8\] but test samples \[1, 6, 6\]"):
        ArrayDataset("x", torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, 1, 6, 6), torch.zeros(2), 10)
    with pytest.raises(DataError, match="features and labels differ in length"):
        ArrayDataset("x", torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 3), torch.zeros(2), 10)


def test_idx_negative_dimension_is_data_error(tmp_path: Path) -> None:
    path = tmp_path / "neg-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + np.array([-1], dtype=">i4").tobytes())
    with pytest.raises(DataError, match="negative dimension"):
        read_idx(path)
