"""MovieLens rating files (Harper & Konstan 2015): ml-latest-small, ML-100K and ML-1M — the one reader that both
`fedge recsys` and `fedge cache` use, so both see the same rows and refuse the same mistakes.

Three on-disk formats, one in-memory result (`Ratings`): dense 0-based user and item indices plus rating and
timestamp. Files are read strictly, and every problem is a one-line `DataError` naming the file and the line:

* a header (ml-latest-small's `ratings.csv`) is read by name, so its columns may come in any order and a missing
  one is named; a file whose first line is a rating row instead of the header is refused (the header is what says
  which column is which, so guessing the order could silently swap ids and ratings);
* every row has the header's number of columns; ids are non-negative integers that fit in 64 bits, the timestamp
  an integer, the rating a finite number on the dataset's scale (0.5-5 in half stars for ml-latest-small, 1-5
  whole stars for ML-100K and ML-1M);
* a (user, movie) pair rated more than once keeps only its latest rating (by timestamp, then file order) and the
  count of dropped rows is `Ratings.duplicates_removed`: a repeated pair would otherwise put a held-out
  interaction into the training data as well.

`read_genres` reads ml-latest-small's `movies.csv` under the same rules. With `download=True` a missing dataset is
fetched from files.grouplens.org and unpacked into `data_dir`.
"""

from __future__ import annotations

import csv
import io
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fedge.errors import DataError

COLUMNS = ("userId", "movieId", "rating", "timestamp")  # the order of the headerless formats
_BOM = b"\xef\xbb\xbf"
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class MovieLensFormat:
    """Where a dataset's ratings live, how their rows are laid out and which ratings are valid."""

    filename: str
    separator: str
    header: bool
    url: str
    folder: str  # folder name inside the official zip
    scale: tuple[float, float] = (0.5, 5.0)  # lowest and highest rating
    step: float = 0.5  # ratings are lowest + k * step

    def describe_scale(self) -> str:
        return f"{self.scale[0]:g}-{self.scale[1]:g} in steps of {self.step:g}"


FORMATS: dict[str, MovieLensFormat] = {
    "ml-latest-small": MovieLensFormat("ratings.csv", ",", True,
                                       "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
                                       "ml-latest-small", (0.5, 5.0), 0.5),
    "ml-100k": MovieLensFormat("u.data", "\t", False, "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                               "ml-100k", (1.0, 5.0), 1.0),
    "ml-1m": MovieLensFormat("ratings.dat", "::", False,
                             "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m", (1.0, 5.0), 1.0),
}


@dataclass
class Ratings:
    """All ratings of a dataset. `user`/`item` are 0-based dense indices; `user_ids`/`item_ids` map them back.
    `duplicates_removed` counts the rows dropped because their (user, item) pair was rated again."""

    name: str
    user: torch.Tensor  # int64 [n]
    item: torch.Tensor  # int64 [n]
    rating: torch.Tensor  # float32 [n]
    timestamp: torch.Tensor  # int64 [n]
    user_ids: np.ndarray  # raw id of each user index
    item_ids: np.ndarray  # raw id of each item index
    duplicates_removed: int = 0

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)


def drop_duplicates(ratings: Ratings) -> Ratings:
    """`ratings` with one row per (user, item) pair: the latest by timestamp (ties: the later row), the kept rows in
    their original order, and the number dropped added to `duplicates_removed`. Returns `ratings` itself if none."""
    n = len(ratings)
    key = ratings.user.numpy() * max(ratings.num_items, 1) + ratings.item.numpy()
    order = np.lexsort((np.arange(n), ratings.timestamp.numpy(), key))  # by key, then timestamp, then row
    last = np.ones(n, dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    keep = torch.from_numpy(np.sort(order[last]))
    if len(keep) == n:
        return ratings
    return replace(ratings, user=ratings.user[keep], item=ratings.item[keep], rating=ratings.rating[keep],
                   timestamp=ratings.timestamp[keep], duplicates_removed=ratings.duplicates_removed + n - len(keep))


def _lines(path: Path) -> list[str]:
    """The file's lines (a UTF-8 byte-order mark dropped). Latin-1 never fails to decode; rows are ASCII numbers."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    return raw.removeprefix(_BOM).decode("latin-1").splitlines()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def header_positions(path: Path, fields: list[str], required: tuple[str, ...]) -> list[int]:
    """Where each `required` column is in the header `fields`; a rating row in place of the header, a missing or a
    repeated column is a DataError naming `path:1`."""
    names = [f.strip().strip('"') for f in fields]
    if any(_is_number(n) for n in names):  # a number is never a column name: the first line is a data row
        raise DataError(f"{path}:1: no header line (the first line holds numbers, a data row); add the header "
                        f"{','.join(required)} as the first line, columns are found by name")
    repeated = [n for k, n in enumerate(names) if n in names[:k]]
    if repeated:
        raise DataError(f"{path}:1: header names column {repeated[0]!r} twice")
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{path}:1: header has no column {missing[0]!r} (needs {', '.join(required)} in any order; "
                        f"got {', '.join(names)})")
    return [names.index(c) for c in required]


def _int64(values: list[int], lines: list[int], path: Path, what: str, lowest: int | None) -> np.ndarray:
    """`values` as int64; one that does not fit (or is below `lowest`) is a DataError naming its line."""
    floor = -_INT64_MAX - 1 if lowest is None else lowest
    if min(values) < floor or max(values) > _INT64_MAX:
        k = next(k for k, v in enumerate(values) if not floor <= v <= _INT64_MAX)
        rule = "an integer that fits in 64 bits" if lowest is None else "a non-negative integer that fits in 64 bits"
        raise DataError(f"{path}:{lines[k]}: {what} {values[k]} is out of range (must be {rule})")
    return np.asarray(values, dtype=np.int64)


def parse_ratings(path: Path, fmt: MovieLensFormat | str = "ml-latest-small", name: str | None = None) -> Ratings:
    """Parse the ratings file at `path` laid out as `fmt` (a `FORMATS` key or a format) strictly, then drop repeated
    (user, item) pairs (see `drop_duplicates`). Errors are one line naming `path:line`."""
    if isinstance(fmt, str):
        name = name or fmt
        fmt = FORMATS[fmt]
    name = name or "movielens"
    lines = _lines(path)
    sep, expected = fmt.separator, ",".join(COLUMNS)
    if fmt.header:
        if not lines or not lines[0].strip():
            raise DataError(f"{path}:1: empty file (expected a header line {expected})")
        fields = lines[0].split(sep)
        positions, width, start = header_positions(path, fields, COLUMNS), len(fields), 1
    else:
        positions, width, start = [0, 1, 2, 3], 4, 0
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    stamps: list[int] = []
    numbers: list[int] = []  # the line number of every row kept
    pu, pi, pr, pt = positions
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != width:
            raise DataError(f"{path}:{lineno}: expected {width} columns separated by {sep!r}, got {len(parts)}")
        try:
            users.append(int(parts[pu]))
            items.append(int(parts[pi]))
        except ValueError:
            hint = f" ({fmt.filename} has no header line)" if lineno == 1 and not fmt.header else ""
            raise DataError(f"{path}:{lineno}: user and item ids must be integers, got {parts[pu]!r}, "
                            f"{parts[pi]!r}{hint}") from None
        try:
            ratings.append(float(parts[pr]))
            stamps.append(int(parts[pt]))
        except ValueError:
            raise DataError(f"{path}:{lineno}: rating and timestamp must be numbers, got {parts[pr]!r}, "
                            f"{parts[pt]!r}") from None
        numbers.append(lineno)
    if not users:
        raise DataError(f"{path}:{start + 1}: empty file (no rating rows)")
    raw_users = _int64(users, numbers, path, "user id", 0)
    raw_items = _int64(items, numbers, path, "movie id", 0)
    timestamp = _int64(stamps, numbers, path, "timestamp", None)
    rating = np.asarray(ratings, dtype=np.float64)
    _check_scale(rating, numbers, lines, path, fmt, name)
    user_ids, user = np.unique(raw_users, return_inverse=True)
    item_ids, item = np.unique(raw_items, return_inverse=True)
    return drop_duplicates(Ratings(
        name=name, user=torch.from_numpy(user.astype(np.int64)), item=torch.from_numpy(item.astype(np.int64)),
        rating=torch.from_numpy(rating.astype(np.float32)), timestamp=torch.from_numpy(timestamp),
        user_ids=user_ids, item_ids=item_ids))


def _check_scale(rating: np.ndarray, numbers: list[int], lines: list[str], path: Path, fmt: MovieLensFormat,
                 name: str) -> None:
    """Every rating finite, within `fmt.scale` and on its steps; else a DataError naming the first bad line."""
    lo, hi = fmt.scale
    with np.errstate(invalid="ignore"):
        steps = (rating - lo) / fmt.step
        bad = ~np.isfinite(rating) | (rating < lo) | (rating > hi) | (np.abs(steps - np.round(steps)) > 1e-6)
    if bad.any():
        k = int(np.argmax(bad))
        line = numbers[k]
        what = "is not a finite number" if not np.isfinite(rating[k]) else \
            f"is off the {name} rating scale ({fmt.describe_scale()})"
        raise DataError(f"{path}:{line}: rating {rating[k]:g} {what}: {lines[line - 1].strip()!r}")


def read_genres(path: Path) -> dict[int, list[str]]:
    """movieId -> genres from ml-latest-small's movies.csv (header read by name: movieId and genres; '(no genres
    listed)' gives an empty list). A missing header, a malformed row, an out-of-range or repeated movieId is a
    DataError naming the line."""
    try:
        raw = path.read_bytes().removeprefix(_BOM)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # titles are never used; ids and genres are ASCII
    reader = csv.reader(io.StringIO(text, newline=""))
    genres: dict[int, list[str]] = {}
    first_line: dict[int, int] = {}
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: empty file (expected a header line movieId,title,genres)")
        id_col, genre_col = header_positions(path, header, ("movieId", "genres"))
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
            try:
                movie = int(row[id_col])
            except ValueError:
                raise DataError(f"{path}:{line}: movieId must be an integer, got {row[id_col]!r}") from None
            if not 0 <= movie <= _INT64_MAX:
                raise DataError(f"{path}:{line}: movie id {movie} is out of range (must be a non-negative integer "
                                "that fits in 64 bits)")
            if movie in first_line:
                raise DataError(f"{path}:{line}: movieId {movie} repeats line {first_line[movie]}")
            first_line[movie] = line
            genres[movie] = [g for g in row[genre_col].split("|") if g and g != "(no genres listed)"]
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return genres


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
    return parse_ratings(path, fmt, name=dataset)


__all__ = ["COLUMNS", "FORMATS", "MovieLensFormat", "Ratings", "drop_duplicates", "header_positions",
           "load_movielens", "parse_ratings", "read_genres"]
