"""What the file-based image loaders share: finding the files, verifying checksums, downloading, normalising.

Checksums: a loader takes `checksums: Mapping[str, str] | None`. `None` means the loader's canonical table of
published digests (torchvision's md5 lists for MNIST, Fashion-MNIST, CIFAR-10 and the EMNIST archive); a mapping
replaces it — the tests pass their own digests for tiny fixture files, and `{}` turns verification off. A digest is
md5 when it has 32 hex digits, sha256 when it has 64. Files whose name is absent from the table (for instance an
uncompressed copy of a file whose digest was published for the `.gz`) are not hashed; the loaders still check their
structure. Verification happens before a file is parsed, so a CIFAR pickle is never unpickled unless it matches.

Downloads happen only when the caller passes `download=True` (never in tests): the file is streamed to
`<name>.part` next to its destination, verified, then renamed, so an interrupted download leaves no file that
looks complete.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from fedge.data.base import sha256_file
from fedge.errors import DataError
from fedge.output import progress_bar

_TIMEOUT_S = 60


def file_digest(path: Path, hex_length: int) -> str:
    """md5 (32 hex digits) or sha256 (64) of the file at `path`."""
    if hex_length == 64:
        return sha256_file(path)
    if hex_length != 32:
        raise ValueError(f"a checksum must be 32 (md5) or 64 (sha256) hex digits, got {hex_length}")
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str, dataset: str) -> None:
    """Raise a one-line DataError naming `path` unless its md5/sha256 equals `expected`."""
    expected = expected.lower()
    actual = file_digest(path, len(expected))
    if actual != expected:
        kind = "md5" if len(expected) == 32 else "sha256"
        raise DataError(f"{dataset}: checksum mismatch for {path} ({kind} {actual}, expected {expected}); "
                        f"the file is corrupt or not the canonical one — delete it and fetch it again")


def verify_files(paths: Sequence[Path], checksums: Mapping[str, str], dataset: str) -> None:
    """Verify each path whose file name has an entry in `checksums`; other files are left to structural checks."""
    for path in paths:
        if path.name in checksums:
            verify_checksum(path, checksums[path.name], dataset)


def find_variant(folder: Path, name: str) -> Path | None:
    """`folder/name.gz` if present, else `folder/name` if present, else None (IDX files come gzip'd or not)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def locate(data_dir: Path | None, subdir: str, present: Callable[[Path], list[str]], dataset: str,
           download: bool, hint: str = "", can_download: bool = True) -> tuple[Path, list[str]]:
    """Choose the folder holding a dataset's files: `data_dir/subdir`, or `data_dir` itself if the files are there.

    `present(folder)` returns the names still missing in `folder`. Returns `(folder, missing)`; `missing` is
    non-empty only when `download` is set (the caller fetches them into `folder`). Offline and absent, raises a
    one-line DataError naming the missing files and the folder to put them in.
    """
    if data_dir is None:
        raise DataError(f"{dataset}: no --data-dir given; put its files in <data-dir>/{subdir}/ "
                        f"(see docs/datasets.md) and pass --data-dir")
    data_dir = Path(data_dir)
    preferred = data_dir / subdir
    missing = present(preferred)
    if missing and data_dir.is_dir() and not present(data_dir):
        return data_dir, []
    if missing and not (download and can_download):
        how = "put the files there or pass --download" if can_download else "put the files there"
        raise DataError(f"{dataset}: missing {', '.join(missing)} in {preferred}{hint} ({how})")
    return preferred, missing


def download_file(urls: Sequence[str], dest: Path, expected: str | None, dataset: str) -> Path:
    """Fetch the first URL of `urls` that answers into `dest`, verifying `expected` (md5/sha256) if given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                with progress_bar(f"{dataset}: {dest.name}", total=max(total >> 10, 1)) as advance:
                    while block := response.read(1 << 20):
                        out.write(block)
                        advance(len(block) >> 10)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        if expected is not None:
            try:
                verify_checksum(part, expected, dataset)
            except DataError:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: checksum mismatch")
                continue
        part.replace(dest)
        return dest
    raise DataError(f"{dataset}: could not download {dest.name} ({'; '.join(errors)}); "
                    f"put the file in {dest.parent} by hand")


def extract_tar(archive: Path, dest: Path, dataset: str) -> None:
    """Extract a .tar(.gz) into `dest`, refusing members that would land outside it (absolute paths, `..`, links)."""
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise DataError(f"{dataset}: refusing to extract {member.name!r} from {archive}")
        for member in tar.getmembers():
            target = dest / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [n, C, H, W] -> float32 scaled to [0, 1], then standardised per channel with the TRAINING
    set's mean and std (the test set uses the same statistics, so no test information leaks into the inputs).

    Works in place on the float copies to keep the peak memory near one float copy of each split (EMNIST ByClass
    is 697,932 × 784 values).
    """
    train = x_train.to(torch.float32).div_(255.0)
    test = x_test.to(torch.float32).div_(255.0)
    dims = [0, *range(2, train.dim())]
    std, mean = torch.std_mean(train, dim=dims, keepdim=True)
    std = std.clamp_min(1e-6)
    return train.sub_(mean).div_(std), test.sub_(mean).div_(std)
