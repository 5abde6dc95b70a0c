"""MovieLens rating files (Harper & Konstan 2015): ml-latest-small, ML-100K and ML-1M.

Three on-disk formats, one in-memory result (`Ratings`): dense 0-based user and item indices plus rating and
timestamp. Files are parsed strictly: a row with the wrong number of columns, a non-numeric id, rating or timestamp,
or an empty file is a one-line `DataError` naming the file and the line, never a silently skipped row. With
`download=True` a missing dataset is fetched from files.grouplens.org and unpacked into `data_dir`.
"""

from __future__ import annotations

import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedge.errors import DataError


@dataclass(frozen=True)
class MovieLensFormat:
    """Where a dataset's ratings live and how their rows are laid out."""

    filename: str
    separator: str
    header: bool
    url: str
    folder: str  # folder name inside the official zip


FORMATS: dict[str, MovieLensFormat] = {
    "ml-latest-small": MovieLensFormat("ratings.csv", ",", True,
                                       "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
                                       "ml-latest-small"),
    "ml-100k": MovieLensFormat("u.data", "\t", False,
                               "https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k"),
    "ml-1m": MovieLensFormat("ratings.dat", "::", False,
                             "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m"),
}


@dataclass
class Ratings:
    """All ratings of a dataset. `user`/`item` are 0-based dense indices; `user_ids`/`item_ids` map them back."""

    name: str
    user: torch.Tensor  # int64 [n]
    item: torch.Tensor  # int64 [n]
    rating: torch.Tensor  # float32 [n]
    timestamp: torch.Tensor  # int64 [n]
    user_ids: np.ndarray  # raw id of each user index
    item_ids: np.ndarray  # raw id of each item index

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)


def parse_ratings(path: Path, separator: str, header: bool, name: str = "movielens") -> Ratings:
    """Parse `user<sep>item<sep>rating<sep>timestamp` rows strictly; errors name `path:line`."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    lines = text.splitlines()
    start = 1 if header else 0
    if header:
        if not lines or not lines[0].strip():
            raise DataError(f"{path}:1: empty file (expected a header line userId,movieId,rating,timestamp)")
        columns = [c.strip() for c in lines[0].split(separator)]
        if len(columns) != 4:
            raise DataError(f"{path}:1: header has {len(columns)} columns, expected 4 "
                            "(userId,movieId,rating,timestamp)")
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    stamps: list[int] = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        parts = line.split(separator)
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 columns separated by {separator!r}, got {len(parts)}")
        try:
            users.append(int(parts[0]))
            items.append(int(parts[1]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: user and item ids must be integers, got {parts[0]!r}, {parts[1]!r}")\
                from None
        try:
            rating = float(parts[2])
            stamps.append(int(parts[3]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: rating and timestamp must be numbers, got {parts[2]!r}, {parts[3]!r}")\
                from None
        if not np.isfinite(rating):
            raise DataError(f"{path}:{lineno}: rating {parts[2]!r} is not a finite number")
        ratings.append(rating)
    if not users:
        raise DataError(f"{path}:{start + 1}: empty file (no rating rows)")
    user_ids, user = np.unique(np.asarray(users, dtype=np.int64), return_inverse=True)
    item_ids, item = np.unique(np.asarray(items, dtype=np.int64), return_inverse=True)
    return Ratings(
        name=name,
        user=torch.from_numpy(user.astype(np.int64)),
        item=torch.from_numpy(item.astype(np.int64)),
        rating=torch.tensor(ratings, dtype=torch.float32),
        timestamp=torch.tensor(stamps, dtype=torch.int64),
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _find(folder: Path, fmt: MovieLensFormat) -> Path | None:
    for candidate in (folder / fmt.filename, folder / fmt.folder / fmt.filename):
        if candidate.is_file():
            return candidate
    return None


def _download(folder: Path, fmt: MovieLensFormat) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{fmt.folder}.zip"
    try:
        urllib.request.urlretrieve(fmt.url, archive)  # noqa: S310 - fixed https URL
    except OSError as err:
        raise DataError(f"could not download {fmt.url} ({err}); put {fmt.filename} in {folder} instead") from None
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(folder)
    archive.unlink(missing_ok=True)


def load_movielens(dataset: str, data_dir: Path | None, download: bool = False) -> Ratings:
    """Load `dataset` ('ml-latest-small', 'ml-100k' or 'ml-1m') from `data_dir` (or `data_dir/<dataset>`)."""
    if dataset not in FORMATS:
        raise DataError(f"unknown MovieLens dataset {dataset!r} (choose from {', '.join(FORMATS)})")
    fmt = FORMATS[dataset]
    if data_dir is None:
        raise DataError(f"{dataset}: no --data-dir given; pass the folder that holds {fmt.filename}")
    data_dir = Path(data_dir)
    path = _find(data_dir, fmt)
    if path is None and download:
        _download(data_dir, fmt)
        path = _find(data_dir, fmt)
    if path is None:
        raise DataError(f"{dataset}: {fmt.filename} not found in {data_dir} (put it there or pass --download)")
    return parse_ratings(path, fmt.separator, fmt.header, name=dataset)


__all__ = ["FORMATS", "MovieLensFormat", "Ratings", "load_movielens", "parse_ratings"]
