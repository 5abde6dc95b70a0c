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
    with pytest.raises(DataError, match="ratings.csv:2: user and item ids must be integers"):
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


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("junk.pt", b"hello, not a tensor", "cannot read"),  # was a KeyError traceback from the unpickler
    ("empty.pt", b"", "cannot read"),
    ("junk.npy", b"not numpy", "cannot read"),
    ("junk.npz", b"PK\x03\x04 truncated", "cannot read"),
    ("e.txt", b"1 2 3", "must be .pt, .npy or .npz"),
])
def test_unreadable_embedding_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes,
                                                         fragment: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        file_embeddings(tmp_path / name, _trace_with_ids([7, 8, 9]))
    assert fragment in str(info.value) and str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_non_finite_or_malformed_embeddings_are_refused(tmp_path: Path) -> None:
    """All-NaN embeddings used to switch soft hits off silently (cosine NaN is never above the floor)."""
    trace = _trace_with_ids([7, 8, 9])
    one_inf = torch.ones(3, 2)
    one_inf[1, 0] = float("inf")
    for emb, message in ((torch.full((3, 2), float("nan")), "6 non-finite values (NaN or inf; first in row 0)"),
                         (one_inf, "1 non-finite values (NaN or inf; first in row 1)")):
        torch.save(emb, tmp_path / "e.pt")
        with pytest.raises(DataError) as info:
            file_embeddings(tmp_path / "e.pt", trace)
        assert message in str(info.value)
    cases = [({"item_embeddings": "abc"}, "holds str as its embeddings"),
             ({"item_embeddings": torch.ones(3, 2), "item_ids": torch.tensor([7, 7, 9])}, "item id 7 more than once"),
             ({"item_embeddings": torch.ones(3, 2), "item_ids": torch.tensor([7.5, 8, 9])}, "not integers"),
             ({"item_embeddings": torch.ones(0, 2)}, "non-empty 2-D matrix")]
    for payload, fragment in cases:
        torch.save(payload, tmp_path / "d.pt")
        with pytest.raises(DataError, match=fragment):
            file_embeddings(tmp_path / "d.pt", trace)


def test_trace_reads_ratings_with_the_recsys_rules(tmp_path: Path) -> None:
    """One MovieLens reader: the cache trace drops repeated (user, movie) pairs and refuses what recsys refuses."""
    folder = write_movielens(tmp_path / "ml")
    rows = (folder / "ratings.csv").read_text().splitlines()
    (folder / "ratings.csv").write_text("\n".join(rows + rows[1:]) + "\n")  # every rating twice
    trace = movielens_trace(TraceConfig(kind="movielens", data_dir=folder), edges=2, seed=0)
    assert len(trace) == 4 and trace.duplicates_removed == 4
    assert trace.item_ids[trace.items].tolist() == [20, 10, 30, 10]
    for text, fragment in [("movieId,userId,timestamp\n10,1,5\n", "header has no column 'rating'"),
                           ("1,10,4.0,5\n", "no header line"),
                           ("userId,movieId,rating,timestamp\n1,10,43.6,5\n", "rating 43.6 is off"),
                           ("userId,movieId,rating,timestamp\n99999999999999999999,10,4,5\n", "out of range")]:
        (folder / "ratings.csv").write_text(text)
        with pytest.raises(DataError, match=fragment):
            movielens_trace(TraceConfig(kind="movielens", data_dir=folder), 2, 0)
