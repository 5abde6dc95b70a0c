"""Request traces: who asks for which item at which edge, in time order.

A `Trace` is three aligned int arrays (`items`, `edges`, `users`) plus the catalogue. The MovieLens trace replays
ml-latest-small ratings in timestamp order as requests (a rating is evidence the user watched the movie; Harper &
Konstan 2015) with users assigned to edges by a seeded permutation, the usual way cache papers build traces from
rating logs. The synthetic trace draws Zipf(alpha) popularity (Breslau et al. 1999) where every edge ranks the
catalogue by its own permutation (the global one with a fraction of ranks swapped) and the ranks drift over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.caching.config import TraceConfig
from fedge.caching.rng import numpy_stream
from fedge.data.movielens import Ratings, parse_ratings
from fedge.data.movielens import read_genres as read_movie_genres
from fedge.errors import DataError


@dataclass
class Trace:
    items: np.ndarray  # int64 [n] dense item index
    edges: np.ndarray  # int64 [n] edge server of the request
    users: np.ndarray  # int64 [n]
    num_items: int
    item_ids: np.ndarray  # int64 [num_items] original ids (movieId for MovieLens)
    name: str
    duplicates_removed: int = 0  # MovieLens rows dropped because their (user, movie) pair was rated again

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


def read_ratings(data_dir: Path | None) -> Ratings:
    """ml-latest-small's ratings.csv through the MovieLens reader `fedge recsys` uses (`fedge.data.movielens`): the
    same header, id, scale and duplicate rules, the same one-line errors."""
    return parse_ratings(_require(data_dir, ["ratings.csv"]) / "ratings.csv", "ml-latest-small")


def read_genres(data_dir: Path | None) -> dict[int, list[str]]:
    """movieId -> list of genres from movies.csv ('(no genres listed)' gives an empty list), via the same reader."""
    return read_movie_genres(_require(data_dir, ["movies.csv"]) / "movies.csv")


def assign_edges(users: np.ndarray, edges: int, seed: int) -> np.ndarray:
    """Seeded rule: users in a random order (stream `cache-edge-assignment`) are dealt to edges round-robin."""
    unique = np.unique(users)
    order = numpy_stream(seed, "cache-edge-assignment").permutation(len(unique))
    edge_of = np.empty(len(unique), dtype=np.int64)
    edge_of[order] = np.arange(len(unique)) % edges
    return edge_of[np.searchsorted(unique, users)]


def movielens_trace(cfg: TraceConfig, edges: int, seed: int) -> Trace:
    """Ratings sorted by timestamp (stable, so ties keep file order), truncated to episodes × requests_per_episode.
    A (user, movie) pair rated twice is one request (the latest); `Trace.duplicates_removed` counts the others."""
    ratings = read_ratings(cfg.data_dir)
    order = np.argsort(ratings.timestamp.numpy(), kind="stable")
    users = ratings.user_ids[ratings.user.numpy()[order]].astype(np.int64)
    items = ratings.item.numpy()[order].astype(np.int64)
    n = min(len(items), cfg.episodes * cfg.requests_per_episode)
    return Trace(items[:n], assign_edges(users, edges, seed)[:n], users[:n], ratings.num_items,
                 ratings.item_ids.astype(np.int64), "movielens", ratings.duplicates_removed)


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
