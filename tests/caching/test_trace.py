"""Trace readers and generators, and item-embedding sources (small files written here, never downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.caching.config import SoftHitConfig, TraceConfig
from fedge.caching.similarity import SoftHitTable, file_embeddings, genre_embeddings, top_neighbours
from fedge.caching.trace import assign_edges, movielens_trace, synthetic_trace
from fedge.errors import DataError


def write_movielens(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,300\n2,20,3.0,100\n1,30,5.0,200\n"
                                        "3,10,2.0,100\n")
    (folder / "movies.csv").write_text('movieId,title,genres\n10,A,Comedy|Drama\n20,"B, the",Comedy\n'
                                       "30,C,(no genres listed)\n")
    return folder


def test_movielens_trace_in_timestamp_order(tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "ml")
    trace = movielens_trace(TraceConfig(kind="movielens", data_dir=folder), edges=2, seed=0)
    assert trace.item_ids.tolist() == [10, 20, 30]
    assert trace.item_ids[trace.items].tolist() == [20, 10, 30, 10]  # ts 100 (file order), 100, 200, 300
    assert trace.users.tolist() == [2, 3, 1, 1]
    assert trace.edges[2] == trace.edges[3]  # one user, one edge
    emb = genre_embeddings(folder, trace)
    assert emb.tolist() == [[1, 1], [1, 0], [0, 0]]


def test_movielens_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no --data-dir"):
        movielens_trace(TraceConfig(kind="movielens"), 2, 0)
    with pytest.raises(DataError, match="missing ratings.csv"):
        movielens_trace(TraceConfig(kind="movielens", data_dir=tmp_path), 2, 0)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,x,3,4\n")
    with pytest.raises(DataError, match="ratings.csv:2: malformed"):
        movielens_trace(TraceConfig(kind="movielens", data_dir=tmp_path), 2, 0)


def test_assign_edges_is_seeded_and_balanced() -> None:
    users = np.repeat(np.arange(100), 3)
    a, b = assign_edges(users, 4, 1), assign_edges(users, 4, 1)
    assert (a == b).all() and np.bincount(a).tolist() == [75] * 4
    assert not (assign_edges(users, 4, 2) == a).all()


def test_synthetic_trace_zipf_and_drift() -> None:
    cfg = TraceConfig(num_items=50, requests_per_episode=5000, episodes=2, zipf_alpha=1.2, drift_every=0)
    t1, t2 = synthetic_trace(cfg, 3, 5), synthetic_trace(cfg, 3, 5)
    assert (t1.items == t2.items).all() and len(t1) == 10000 and t1.items.max() < 50
    counts = np.sort(np.bincount(t1.items[t1.edges == 0], minlength=50))[::-1]
    assert counts[0] > 5 * counts[25]  # heavy head
    drift = synthetic_trace(TraceConfig(num_items=50, requests_per_episode=5000, episodes=2, zipf_alpha=1.2,
                                        drift_every=1000, drift_fraction=0.5), 1, 5)
    first, last = (np.bincount(drift.items[s], minlength=50).argmax() for s in (slice(0, 1000), slice(9000, None)))
    assert first != last  # the most popular item moved


def _trace_with_ids(ids: list[int]):  # noqa: ANN202
    from .helpers import make_trace

    trace = make_trace(list(range(len(ids))))
    trace.item_ids = np.array(ids)
    return trace


def test_file_embeddings_formats(tmp_path: Path) -> None:
    trace = _trace_with_ids([7, 8, 9])
    emb = np.array([[0, 1], [1, 0], [1, 1]], dtype=np.float32)  # ids 9, 7, 100
    torch.save({"item_embeddings": torch.from_numpy(emb), "item_ids": torch.tensor([9, 7, 100])}, tmp_path / "e.pt")
    np.savez(tmp_path / "e.npz", embeddings=emb, item_ids=np.array([9, 7, 100]))
    np.save(tmp_path / "m.npy", emb)
    per_edge = torch.stack([torch.from_numpy(emb) * 0.5, torch.from_numpy(emb) * 1.5])
    payload = {"item_embeddings": per_edge, "item_ids": torch.tensor([9, 7, 100]), "algorithm": "x"}
    torch.save(payload, tmp_path / "d.pt")
    assert file_embeddings(tmp_path / "d.pt", trace).tolist() == [[1, 0], [0, 0], [0, 1]]  # mean of edge tables
    for name in ("e.pt", "e.npz"):
        out = file_embeddings(tmp_path / name, trace)
        assert out.tolist() == [[1, 0], [0, 0], [0, 1]]  # 7, 8 (absent -> zero), 9
    assert file_embeddings(tmp_path / "m.npy", trace).tolist() == emb.tolist()  # no ids: row order
    with pytest.raises(DataError, match="file not found"):
        file_embeddings(tmp_path / "nope.pt", trace)
    np.save(tmp_path / "bad.npy", emb[:2])
    with pytest.raises(DataError, match="2 rows and no item ids"):
        file_embeddings(tmp_path / "bad.npy", trace)


def test_top_neighbours_and_table() -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    idx, sims = top_neighbours(emb, 2, chunk=3)
    assert idx[0].tolist() == [1, 2] and idx[3].tolist() == [2, 1]
    assert sims[0, 0] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    table = SoftHitTable.build(emb, SoftHitConfig(floor=0.5, neighbours=3))
    assert table.items[0] == [1] and table.items[2] == []  # only candidates with p > 0 are kept
