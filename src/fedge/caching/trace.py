"""Request traces: who asks for which item at which edge, in time order.

A `Trace` is three aligned int arrays (`items`, `edges`, `users`) plus the catalogue. The MovieLens trace replays
ml-latest-small ratings in timestamp order as requests (a rating is evidence the user watched the movie; Harper &
Konstan 2015) with users assigned to edges by a seeded permutation, the usual way cache papers build traces from
rating logs. The synthetic trace draws Zipf(alpha) popularity (Breslau et al. 1999) where every edge ranks the
catalogue by its own permutation (the global one with a fraction of ranks swapped) and the ranks drift over time.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.caching.config import TraceConfig
from fedge.caching.rng import numpy_stream
from fedge.errors import DataError


@dataclass
class Trace:
    items: np.ndarray  # int64 [n] dense item index
    edges: np.ndarray  # int64 [n] edge server of the request
    users: np.ndarray  # int64 [n]
    num_items: int
    item_ids: np.ndarray  # int64 [num_items] original ids (movieId for MovieLens)
    name: str

    def __len__(self) -> int:
        return len(self.items)


def _require(data_dir: Path | None, names: list[str]) -> Path:
    if data_dir is None:
        raise DataError("movielens trace: no --data-dir given; pass the folder holding ml-latest-small ratings.csv "
                        "and movies.csv (e.g. ../shared/data/movielens/ml-latest-small)")
    missing = [n for n in names if not (data_dir / n).is_file()]
    if missing:
        raise DataError(f"movielens trace: missing {', '.join(missing)} in {data_dir}")
    return data_dir


def read_ratings(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_ids, movie_ids, timestamps) from ratings.csv, in file order; a malformed line is a DataError."""
    path = _require(data_dir, ["ratings.csv"]) / "ratings.csv"
    users, movies, stamps = [], [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:4]] != ["userId", "movieId", "rating", "timestamp"]:
            raise DataError(f"{path}: expected header userId,movieId,rating,timestamp")
        for line_no, row in enumerate(reader, start=2):
            try:
                users.append(int(row[0]))
                movies.append(int(row[1]))
                stamps.append(int(row[3]))
            except (ValueError, IndexError):
                raise DataError(f"{path}:{line_no}: malformed rating row {row!r}") from None
    if not users:
        raise DataError(f"{path}: no ratings")
    return np.array(users, dtype=np.int64), np.array(movies, dtype=np.int64), np.array(stamps, dtype=np.int64)


def read_genres(data_dir: Path | None) -> dict[int, list[str]]:
    """movieId -> list of genres from movies.csv ('(no genres listed)' gives an empty list)."""
    path = _require(data_dir, ["movies.csv"]) / "movies.csv"
    genres: dict[int, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["movieId", "title", "genres"]:
            raise DataError(f"{path}: expected header movieId,title,genres")
        for line_no, row in enumerate(reader, start=2):
            try:
                tags = row[2].split("|")
                genres[int(row[0])] = [g for g in tags if g and g != "(no genres listed)"]
            except (ValueError, IndexError):
                raise DataError(f"{path}:{line_no}: malformed movie row {row!r}") from None
    return genres


def assign_edges(users: np.ndarray, edges: int, seed: int) -> np.ndarray:
    """Seeded rule: users in a random order (stream `cache-edge-assignment`) are dealt to edges round-robin."""
    unique = np.unique(users)
    order = numpy_stream(seed, "cache-edge-assignment").permutation(len(unique))
    edge_of = np.empty(len(unique), dtype=np.int64)
    edge_of[order] = np.arange(len(unique)) % edges
    return edge_of[np.searchsorted(unique, users)]


def movielens_trace(cfg: TraceConfig, edges: int, seed: int) -> Trace:
    """Ratings sorted by timestamp (stable, so ties keep file order), truncated to episodes × requests_per_episode."""
    users, movies, stamps = read_ratings(cfg.data_dir)
    order = np.argsort(stamps, kind="stable")
    users, movies = users[order], movies[order]
    item_ids, items = np.unique(movies, return_inverse=True)
    n = min(len(items), cfg.episodes * cfg.requests_per_episode)
    return Trace(items[:n].astype(np.int64), assign_edges(users, edges, seed)[:n], users[:n], len(item_ids),
                 item_ids.astype(np.int64), "movielens")


def synthetic_trace(cfg: TraceConfig, edges: int, seed: int) -> Trace:
    """Zipf(alpha) requests, edges uniformly at random; every `drift_every` requests a `drift_fraction` of each
    edge's ranks are swapped at random (popularity drift). Each part draws from its own named stream (see
    `fedge.caching.rng`): an edge's ranking and drift do not depend on the other edges."""
    n, m = cfg.episodes * cfg.requests_per_episode, cfg.num_items
    ranks = np.arange(1, m + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -cfg.zipf_alpha)
    cdf /= cdf[-1]
    base = numpy_stream(seed, "cache-trace-popularity").permutation(m)
    perms = np.empty((edges, m), dtype=np.int64)
    for e in range(edges):
        perms[e] = base
        _swap(perms[e], int(cfg.edge_shuffle * m / 2), numpy_stream(seed, "cache-trace-edge-shuffle", e))
    requests = numpy_stream(seed, "cache-trace-requests")
    edge_of = requests.integers(0, edges, size=n)
    rank_of = np.minimum(np.searchsorted(cdf, requests.random(n)), m - 1)
    items = np.empty(n, dtype=np.int64)
    block = cfg.drift_every if cfg.drift_every > 0 else n
    for number, start in enumerate(range(0, n, block)):
        stop = min(n, start + block)
        items[start:stop] = perms[edge_of[start:stop], rank_of[start:stop]]
        if cfg.drift_every > 0 and stop < n:
            for e in range(edges):
                _swap(perms[e], int(cfg.drift_fraction * m / 2), numpy_stream(seed, "cache-trace-drift", e, number))
    return Trace(items, edge_of.astype(np.int64), np.zeros(n, dtype=np.int64), m, np.arange(m, dtype=np.int64),
                 "synthetic")


def _swap(perm: np.ndarray, pairs: int, rng: np.random.Generator) -> None:
    """Swap `pairs` random pairs of positions of `perm` in place."""
    if pairs <= 0:
        return
    a = rng.integers(0, len(perm), size=pairs)
    b = rng.integers(0, len(perm), size=pairs)
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        perm[i], perm[j] = perm[j], perm[i]


def build_trace(cfg: TraceConfig, edges: int, seed: int) -> Trace:
    return movielens_trace(cfg, edges, seed) if cfg.kind == "movielens" else synthetic_trace(cfg, edges, seed)
