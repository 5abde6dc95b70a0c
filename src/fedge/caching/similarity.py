"""Item similarity for soft hits, and the acceptance model.

Similarity is the cosine of item embeddings. The embeddings come, in order of preference, from the federated
recommender's export (`--item-embeddings`: .pt / .npy / .npz with item ids), from movie genres (multi-hot vectors
from movies.csv), or, for the synthetic trace only, from seeded clustered vectors. Only each item's `neighbours`
most similar items are kept (a sparse top-K table), which is what keeps the per-request recommendation O(K).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedge.caching.config import SoftHitConfig
from fedge.caching.rng import numpy_stream
from fedge.caching.trace import Trace, read_genres
from fedge.core.similarity import cosine_to
from fedge.errors import DataError


def acceptance_probability(s: np.ndarray | float, cfg: SoftHitConfig) -> np.ndarray:
    """p(s) = max_prob · g(s) for s >= floor, else 0 (see SoftHitConfig for g)."""
    s = np.asarray(s, dtype=np.float64)
    if cfg.function == "linear":
        g = (s - cfg.floor) / (1.0 - cfg.floor)
    elif cfg.function == "power":
        g = np.clip(s, 0.0, 1.0) ** cfg.exponent
    elif cfg.function == "sigmoid":
        g = 1.0 / (1.0 + np.exp(-cfg.steepness * (s - cfg.midpoint)))
    else:
        g = np.ones_like(s)
    return np.where(s >= cfg.floor, cfg.max_prob * np.clip(g, 0.0, 1.0), 0.0)


def _read(path: Path) -> tuple[object, object]:
    """(embeddings, ids or None) as stored in the file, before any check. Anything that cannot be deserialised —
    not a tensor file, a pickle with other objects, a truncated archive — is a one-line DataError."""
    if path.suffix not in (".pt", ".npy", ".npz"):
        raise DataError(f"item embeddings: {path} must be .pt, .npy or .npz")
    try:
        if path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                return obj.get("item_embeddings", obj.get("embeddings")), obj.get("item_ids")
            return obj, None
        if path.suffix == ".npz":
            with np.load(path) as data:
                key = "item_embeddings" if "item_embeddings" in data else "embeddings"
                return (data[key] if key in data else None), (data["item_ids"] if "item_ids" in data else None)
        sibling = path.with_name("item_ids.npy")
        return np.load(path), (np.load(sibling) if sibling.is_file() else None)
    except Exception as err:  # noqa: BLE001 - any failure to deserialise a user's file is a data error
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # numpy's hints are not for CLI users
        detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
        kind = {".pt": "a torch tensor file", ".npy": "a NumPy .npy array", ".npz": "a NumPy .npz archive"}
        raise DataError(f"item embeddings: cannot read {path} as {kind[path.suffix]} ({detail})") from None


def _as_array(value: object, path: Path, what: str) -> np.ndarray:
    """`value` (tensor or array) as a NumPy array; anything else (strings, nested objects) is a DataError."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    raise DataError(f"item embeddings: {path} holds {type(value).__name__} as its {what}, expected a tensor/array")


def _load_matrix(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(embeddings [n, d], ids [n] or None) from .pt (tensor or dict), .npz or .npy (+ sibling item_ids.npy).
    The dict layout is what `fedge recsys` exports: {"item_embeddings": [n, d] or [edges, n, d], "item_ids": [n]}.
    Every value must be finite (a NaN row would silently never be a soft hit) and ids unique integers."""
    if not path.is_file():
        raise DataError(f"item embeddings: file not found: {path}")
    raw, raw_ids = _read(path)
    if raw is None:
        raise DataError(f"item embeddings: {path} has no 'item_embeddings' or 'embeddings' entry")
    emb = _as_array(raw, path, "embeddings")
    if emb.dtype.kind not in "biuf":
        raise DataError(f"item embeddings: {path} holds {emb.dtype} values, expected numbers")
    emb = emb.astype(np.float32)
    if emb.ndim == 3:  # one table per edge (decentralized recommender runs): use their mean
        emb = emb.mean(axis=0)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise DataError(f"item embeddings: {path} must hold a non-empty 2-D matrix, got shape {emb.shape}")
    bad = ~np.isfinite(emb)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise DataError(f"item embeddings: {path} has {int(bad.sum())} non-finite values (NaN or inf; first in row "
                        f"{row}); was the recommender's training diverging?")
    ids = None if raw_ids is None else _check_ids(_as_array(raw_ids, path, "item_ids"), path, len(emb))
    return emb, ids


def _check_ids(ids: np.ndarray, path: Path, rows: int) -> np.ndarray:
    """Item ids as int64 [rows]: integers (or integral floats), one per row, no repeats."""
    ids = ids.reshape(-1)
    if ids.dtype.kind == "f" and not (np.isfinite(ids).all() and (ids == np.round(ids)).all()):
        raise DataError(f"item embeddings: {path} has item ids that are not integers")
    if ids.dtype.kind not in "biuf" or (len(ids) and (ids.min() < np.iinfo(np.int64).min
                                                          or ids.max() > np.iinfo(np.int64).max)):
        raise DataError(f"item embeddings: {path} has item ids of type {ids.dtype} that do not fit in 64 bits")
    ids = ids.astype(np.int64)
    if len(ids) != rows:
        raise DataError(f"item embeddings: {path} has {rows} rows but {len(ids)} item ids")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"item embeddings: {path} lists item id {int(unique[np.argmax(counts > 1)])} more than once")
    return ids


def file_embeddings(path: Path, trace: Trace) -> np.ndarray:
    """Rows of the exported matrix aligned to the trace's catalogue by item id (row order if no ids are given);
    items the file does not cover get a zero vector, i.e. similarity 0 and never a soft hit."""
    emb, ids = _load_matrix(path)
    out = np.zeros((trace.num_items, emb.shape[1]), dtype=np.float32)
    if ids is None:
        if len(emb) != trace.num_items:
            raise DataError(f"item embeddings: {path} has {len(emb)} rows and no item ids, but the catalogue has "
                            f"{trace.num_items} items")
        return emb
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    hits = [(k, row_of[int(i)]) for k, i in enumerate(trace.item_ids.tolist()) if int(i) in row_of]
    if not hits:
        raise DataError(f"item embeddings: none of the ids in {path} matches the trace's items")
    cols, rows = zip(*hits, strict=True)
    out[list(cols)] = emb[list(rows)]
    return out


def genre_embeddings(data_dir: Path | None, trace: Trace) -> np.ndarray:
    """Multi-hot genre vectors from movies.csv (cosine of two of them = genre overlap)."""
    genres = read_genres(data_dir)
    names = sorted({g for tags in genres.values() for g in tags})
    col = {g: j for j, g in enumerate(names)}
    out = np.zeros((trace.num_items, len(names)), dtype=np.float32)
    for k, movie in enumerate(trace.item_ids.tolist()):
        for g in genres.get(int(movie), []):
            out[k, col[g]] = 1.0
    return out


def synthetic_embeddings(num_items: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Seeded clustered vectors (stream `cache-embeddings`): cluster centre plus noise, so items of a cluster are
    mutually similar."""
    rng = numpy_stream(seed, "cache-embeddings")
    centres = rng.standard_normal((clusters, dim))
    assign = rng.integers(0, clusters, size=num_items)
    return (centres[assign] + 0.5 * rng.standard_normal((num_items, dim))).astype(np.float32)


def top_neighbours(emb: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each item's k most similar other items by cosine: (indices [m, k], similarities [m, k]), best first."""
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    m = len(x)
    k = min(k, m - 1)
    idx = np.empty((m, k), dtype=np.int64)
    sims = np.empty((m, k), dtype=np.float32)
    for start in range(0, m, chunk):
        block = cosine_to(x[start:start + chunk], x)
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = -2.0  # never recommend the item itself
        val, ind = torch.topk(block, k, dim=1)
        idx[start:start + chunk], sims[start:start + chunk] = ind.numpy(), val.numpy()
    return idx, sims


@dataclass
class SoftHitTable:
    """Per item, the candidate substitutes with p(accept) > 0 as plain lists (fast to scan in the simulator)."""

    items: list[list[int]]
    sims: list[list[float]]
    probs: list[list[float]]

    @classmethod
    def build(cls, emb: np.ndarray, cfg: SoftHitConfig) -> SoftHitTable:
        idx, sims = top_neighbours(emb, cfg.neighbours)
        probs = acceptance_probability(sims, cfg)
        keep = probs > 0
        return cls([idx[i][keep[i]].tolist() for i in range(len(idx))],
                   [sims[i][keep[i]].astype(float).tolist() for i in range(len(idx))],
                   [probs[i][keep[i]].tolist() for i in range(len(idx))])

    @classmethod
    def empty(cls, num_items: int) -> SoftHitTable:
        return cls([[] for _ in range(num_items)], [[] for _ in range(num_items)], [[] for _ in range(num_items)])


def item_embeddings(trace: Trace, embeddings_path: Path | None, data_dir: Path | None, dim: int, clusters: int,
                    seed: int) -> tuple[np.ndarray, str]:
    """The embeddings to use and where they came from (for the summary)."""
    if embeddings_path is not None:
        return file_embeddings(embeddings_path, trace), f"file:{embeddings_path}"
    if trace.name == "movielens":
        return genre_embeddings(data_dir, trace), "genres"
    return synthetic_embeddings(trace.num_items, dim, clusters, seed), "synthetic"
