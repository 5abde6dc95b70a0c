"""MNIST, Fashion-MNIST and EMNIST from their canonical IDX files (gzip'd or not), as [n, 1, 28, 28] tensors.

* MNIST (LeCun et al. 1998): 60,000 + 10,000 handwritten digits, 10 classes.
* Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 Zalando article images, 10 classes, same file names as MNIST.
* EMNIST (Cohen et al. 2017): NIST Special Database 19 converted to the MNIST format. The ByClass split (62 classes:
  digits, upper- and lower-case letters; 697,932 + 116,323 = 814,255 images) is the DPMN paper's "CEMNIST". EMNIST
  images are stored transposed relative to MNIST; the loader transposes them back so that they read upright.

Checksums: the md5 values are those of the canonical `.gz` files published in torchvision's dataset lists (and, for
Fashion-MNIST, in its README). The NIST archive `gzip.zip` has a published md5; its individual EMNIST files do not,
so for EMNIST the loader checks the published per-split image counts instead (when using the canonical table).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fedge.data.base import ArrayDataset
from fedge.data.download import download_file, find_variant, locate, standardise, verify_checksum, verify_files
from fedge.data.idx import read_idx
from fedge.errors import DataError

_MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
EMNIST_ARCHIVE = "gzip.zip"
EMNIST_ARCHIVE_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
EMNIST_URLS = ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
               "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip")

# split -> (number of classes, label offset, published train count, published test count); Cohen et al. 2017, Table II
EMNIST_SPLITS: dict[str, tuple[int, int, int, int]] = {
    "byclass": (62, 0, 697_932, 116_323),
    "bymerge": (47, 0, 697_932, 116_323),
    "balanced": (47, 0, 112_800, 18_800),
    "letters": (26, 1, 124_800, 20_800),  # labels are stored 1..26
    "digits": (10, 0, 240_000, 40_000),
    "mnist": (10, 0, 60_000, 10_000),
}


@dataclass(frozen=True)
class _IdxSpec:
    name: str
    subdir: str
    files: tuple[str, str, str, str]  # train images, train labels, test images, test labels (without .gz)
    num_classes: int
    checksums: Mapping[str, str]
    counts: tuple[int, int]
    mirrors: tuple[str, ...] = ()
    label_offset: int = 0
    transpose: bool = False


_MNIST = _IdxSpec("mnist", "mnist", _MNIST_FILES, 10, MNIST_MD5, (60_000, 10_000),
                  mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"))
_FASHION = _IdxSpec("fashion_mnist", "fashion_mnist", _MNIST_FILES, 10, FASHION_MNIST_MD5, (60_000, 10_000),
                    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",))


def _emnist_spec(split: str) -> _IdxSpec:
    if split not in EMNIST_SPLITS:
        raise DataError(f"emnist: unknown split {split!r}; choose one of {', '.join(EMNIST_SPLITS)}")
    classes, offset, n_train, n_test = EMNIST_SPLITS[split]
    files = tuple(f"emnist-{split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
                  for part in ("train", "test") for kind in ("images", "labels"))
    return _IdxSpec(f"emnist_{split}", "emnist", files, classes, {}, (n_train, n_test),  # type: ignore[arg-type]
                    label_offset=offset, transpose=True)


def _fetch_emnist(folder: Path, missing: list[str], checksums: Mapping[str, str] | None) -> None:
    """Download NIST's gzip.zip (md5-verified, kept for the other splits) and extract the missing split files."""
    archive = folder / EMNIST_ARCHIVE
    expected = EMNIST_ARCHIVE_MD5 if checksums is None else checksums.get(EMNIST_ARCHIVE)
    if archive.is_file():
        if expected:
            verify_checksum(archive, expected, "emnist")
    else:
        download_file(EMNIST_URLS, archive, expected, "emnist")
    with zipfile.ZipFile(archive) as zf:
        for name in missing:
            member = f"gzip/{name}.gz"
            try:
                data = zf.read(member)
            except KeyError as err:
                raise DataError(f"emnist: {archive} has no member {member}") from err
            (folder / f"{name}.gz").write_bytes(data)


def _check_pair(images: torch.Tensor, labels: torch.Tensor, image_path: Path, label_path: Path,
                spec: _IdxSpec, count: int | None) -> torch.Tensor:
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DataError(f"{spec.name}: {image_path} holds {images.dtype} of shape {tuple(images.shape)}, "
                        f"expected uint8 [n, rows, cols]")
    if labels.dim() != 1 or len(labels) != len(images):
        shape = len(labels) if labels.dim() == 1 else f"shape {tuple(labels.shape)}"
        raise DataError(f"{spec.name}: {label_path} holds {shape} labels for {len(images)} images in {image_path.name}")
    if len(images) == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{spec.name}: {image_path} holds no images (shape {tuple(images.shape)})")
    if count is not None and len(images) != count:
        raise DataError(f"{spec.name}: {image_path} holds {len(images)} images, the canonical file has {count}")
    y = labels.to(torch.int64) - spec.label_offset
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise DataError(f"{spec.name}: {label_path} has labels outside [{spec.label_offset}, "
                        f"{spec.num_classes + spec.label_offset})")
    return y


def _load(spec: _IdxSpec, data_dir: Path | None, download: bool, checksums: Mapping[str, str] | None,
          fetch_archive: bool = False) -> ArrayDataset:
    def missing_in(folder: Path) -> list[str]:
        return [f"{n}.gz" for n in spec.files if find_variant(folder, n) is None]

    folder, missing = locate(data_dir, spec.subdir, missing_in, spec.name, download,
                             hint=" (.gz or uncompressed)")
    if missing:
        if fetch_archive:
            _fetch_emnist(folder, [m[:-3] for m in missing], checksums)
        else:
            table = spec.checksums if checksums is None else checksums
            for name in missing:
                download_file([m + name for m in spec.mirrors], folder / name, table.get(name), spec.name)
    paths = [find_variant(folder, n) for n in spec.files]
    assert all(p is not None for p in paths)
    tr_img, tr_lab, te_img, te_lab = paths  # type: ignore[misc]
    verify_files(paths, spec.checksums if checksums is None else checksums, spec.name)  # type: ignore[arg-type]
    canonical = checksums is None
    x_train, x_test = read_idx(tr_img), read_idx(te_img)
    y_train = _check_pair(x_train, read_idx(tr_lab), tr_img, tr_lab, spec, spec.counts[0] if canonical else None)
    y_test = _check_pair(x_test, read_idx(te_lab), te_img, te_lab, spec, spec.counts[1] if canonical else None)
    if x_train.shape[1:] != x_test.shape[1:]:
        (rows, cols), (test_rows, test_cols) = x_train.shape[1:], x_test.shape[1:]
        raise DataError(f"{spec.name}: {tr_img} holds {rows}x{cols} images but {te_img} holds {test_rows}x{test_cols}; "
                        "training and test images must be the same size")
    if spec.transpose:
        x_train, x_test = x_train.transpose(1, 2).contiguous(), x_test.transpose(1, 2).contiguous()
    x_train, x_test = standardise(x_train.unsqueeze(1), x_test.unsqueeze(1))
    return ArrayDataset(spec.name, x_train, y_train, x_test, y_test, num_classes=spec.num_classes)


def load_mnist(data_dir: Path | None, download: bool = False,
               checksums: Mapping[str, str] | None = None) -> ArrayDataset:
    """MNIST from `data_dir/mnist/` (or `data_dir` itself): 60,000 train + 10,000 test, [n, 1, 28, 28].

    `checksums=None` verifies the published md5 of each `.gz` and the canonical image counts; pass a mapping of
    file name -> md5/sha256 to use other digests (`{}` disables verification, for subsets and test fixtures).
    """
    return _load(_MNIST, data_dir, download, checksums)


def load_fashion_mnist(data_dir: Path | None, download: bool = False,
                       checksums: Mapping[str, str] | None = None) -> ArrayDataset:
    """Fashion-MNIST from `data_dir/fashion_mnist/` (or `data_dir` itself); same layout and options as MNIST."""
    return _load(_FASHION, data_dir, download, checksums)


def load_emnist(data_dir: Path | None, download: bool = False, split: str = "byclass",
                checksums: Mapping[str, str] | None = None) -> ArrayDataset:
    """EMNIST `split` from `data_dir/emnist/` (files `emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte`,
    `.gz` or not). The default ByClass split is the DPMN paper's CEMNIST (62 classes, 814,255 images).

    Images are transposed back to upright orientation; `letters` labels (stored 1..26) are shifted to 0..25. With
    `checksums=None` the published split sizes are enforced; `download=True` fetches NIST's `gzip.zip` (md5-checked).
    """
    return _load(_emnist_spec(split), data_dir, download, checksums, fetch_archive=True)


def load_cemnist(data_dir: Path | None, download: bool = False,
                 checksums: Mapping[str, str] | None = None) -> ArrayDataset:
    """The DPMN paper's CEMNIST: EMNIST ByClass, 62 classes, 697,932 train + 116,323 test images."""
    return load_emnist(data_dir, download, split="byclass", checksums=checksums)
