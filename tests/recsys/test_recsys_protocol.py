from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedge.core.streams import Streams
from fedge.data.movielens import Ratings, parse_ratings
from fedge.errors import DataError
from fedge.recsys.draws import Draws
from fedge.recsys.protocol import build_explicit, build_implicit, hit_ndcg, rank_of_positive, sample_negatives


def test_hr_ndcg_hand_computed() -> None:
    # Three users, 100 candidates each, column 0 the held-out item.
    scores = torch.zeros(3, 100)
    scores[0, 0] = 5.0  # best of all: rank 0 -> hit, NDCG 1
    scores[1, 0] = 5.0
    scores[1, 1:4] = 6.0  # three negatives above it: rank 3 -> hit, NDCG 1/log2(5)
    scores[2, 0] = 5.0
    scores[2, 1:13] = 6.0  # twelve above it: rank 12 -> miss
    assert rank_of_positive(scores).tolist() == [0, 3, 12]
    hr, ndcg = hit_ndcg(scores, k=10)
    assert math.isclose(hr, 2 / 3)
    assert math.isclose(ndcg, (1.0 + 1.0 / math.log2(5)) / 3)


def test_rank_boundary_and_ties() -> None:
    scores = torch.zeros(2, 100)
    scores[0, 0] = 1.0
    scores[0, 1:10] = 2.0  # rank 9: still a hit at k=10
    scores[1, 0] = 1.0
    scores[1, 1:11] = 1.0  # ten ties: counted against the positive -> rank 10, miss
    hr, ndcg = hit_ndcg(scores, k=10)
    assert hr == 0.5
    assert math.isclose(ndcg, 1.0 / math.log2(11) / 2)


def test_implicit_split_holds_out_latest_for_test_and_second_latest_for_validation(tiny) -> None:
    data = build_implicit(tiny, 20, torch.Generator().manual_seed(0))
    for u in range(tiny.num_users):
        mine = tiny.user == u
        order = torch.argsort(tiny.timestamp[mine])
        latest, second = int(tiny.item[mine][order[-1]]), int(tiny.item[mine][order[-2]])
        assert int(data.test.items[u, 0]) == latest and int(data.val.items[u, 0]) == second
        for held in (data.val, data.test):  # evaluation negatives: items the user never interacted with
            negs = set(held.items[u, 1:].tolist())
            assert len(negs) == 20 and not negs & set(tiny.item[mine].tolist())
        train = data.train_item[data.user_ptr[u]: data.user_ptr[u + 1]].tolist()
        assert sorted(train) == sorted(set(tiny.item[mine].tolist()) - {latest, second})
    assert not torch.equal(data.val.items[:, 1:], data.test.items[:, 1:])  # two independent draws
    users = torch.arange(tiny.num_users).repeat(50)
    draws = Draws(Streams(1), "recsys-train/negatives", 3)
    negatives = sample_negatives(data, users, draws)
    drawn = set((users * tiny.num_items + negatives).tolist())
    assert not drawn & set((data.train_user * tiny.num_items + data.train_item).tolist())
    # Training negatives exclude training positives only (NCF): the held-out items are drawn like any other item
    held_out = set((torch.arange(tiny.num_users) * tiny.num_items + data.test.items[:, 0]).tolist())
    held_out |= set((torch.arange(tiny.num_users) * tiny.num_items + data.val.items[:, 0]).tolist())
    assert drawn & held_out
    # A user's draws depend on nothing but (seed, purpose, round, user): not on who else is in the batch
    alone = sample_negatives(data, torch.full((50,), 5), draws)
    assert torch.equal(alone, negatives[users == 5])
    assert not torch.equal(alone, sample_negatives(data, torch.full((50,), 5), Draws(Streams(1), "x", 3)))


def test_every_user_needs_three_interactions(tiny) -> None:
    keep = torch.ones(len(tiny), dtype=torch.bool)
    keep[torch.nonzero(tiny.user == 3).flatten()[2:]] = False  # user 3 keeps 2 of its ratings
    two = replace(tiny, user=tiny.user[keep], item=tiny.item[keep], rating=tiny.rating[keep],
                  timestamp=tiny.timestamp[keep])
    assert int((two.user == 3).sum()) == 2
    with pytest.raises(DataError, match="tiny: every user needs at least 3 interactions"):
        build_implicit(two, 5, torch.Generator())
    with pytest.raises(DataError, match="tiny: every user needs at least 3 ratings"):
        build_explicit(two, 0.2, torch.Generator())


def test_explicit_split_is_per_user_and_disjoint(tiny) -> None:
    data = build_explicit(tiny, 0.25, torch.Generator().manual_seed(0))
    counts = torch.bincount(tiny.user)
    share = torch.clamp((counts * 0.25).round().long(), 1, None)
    assert torch.equal(torch.bincount(data.test.user, minlength=tiny.num_users), share)
    assert torch.equal(torch.bincount(data.val.user, minlength=tiny.num_users), share)
    assert len(data.train_item) + len(data.val.item) + len(data.test.item) == len(tiny)
    train = set((data.train_user * tiny.num_items + data.train_item).tolist())
    val = set((data.val.user * tiny.num_items + data.val.item).tolist())
    test = set((data.test.user * tiny.num_items + data.test.item).tolist())
    assert not train & test and not train & val and not val & test and data.rating_offset == (1.0 + 5.0) / 2


def _doubled(ratings: Ratings) -> Ratings:
    """Every row twice (the second copy later in the file), as a duplicated ratings.csv reads without dedupe."""
    twice = torch.cat([torch.arange(len(ratings)), torch.arange(len(ratings))])
    return replace(ratings, user=ratings.user[twice], item=ratings.item[twice], rating=ratings.rating[twice],
                   timestamp=ratings.timestamp[twice])


def _pairs(user: torch.Tensor, item: torch.Tensor) -> set[tuple[int, int]]:
    return set(zip(user.tolist(), item.tolist(), strict=True))


def test_duplicated_rows_never_put_held_out_items_in_training(tiny) -> None:
    """Issue 18: with every row twice, the copy of each held-out interaction stayed in training (HR@10 0.067 ->
    0.233). Both protocols split one row per (user, item) pair and count the rows they dropped."""
    doubled = _doubled(tiny)
    implicit = build_implicit(doubled, 20, torch.Generator().manual_seed(0))
    users = torch.arange(tiny.num_users)
    held_out = _pairs(users, implicit.test.items[:, 0]) | _pairs(users, implicit.val.items[:, 0])
    assert not held_out & _pairs(implicit.train_user, implicit.train_item)
    assert implicit.duplicates_removed == len(tiny) and len(implicit.train_user) == len(tiny) - 2 * tiny.num_users
    explicit = build_explicit(doubled, 0.2, torch.Generator().manual_seed(0))
    train = _pairs(explicit.train_user, explicit.train_item)
    assert not _pairs(explicit.test.user, explicit.test.item) & train
    assert not _pairs(explicit.val.user, explicit.val.item) & train
    assert explicit.duplicates_removed == len(tiny)


def test_a_doubled_file_splits_exactly_like_the_original(tmp_path: Path) -> None:
    """Read through the one MovieLens reader, a file with every row twice gives the original split and says how many
    rows it dropped."""
    rows = [f"{u},{10 + (u * 7 + k) % 30},{1 + (u + k) % 5}.0,{100 * u + k}" for u in range(1, 9) for k in range(5)]
    once, twice = tmp_path / "once.csv", tmp_path / "twice.csv"
    once.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    twice.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows + rows) + "\n")
    a, b = parse_ratings(once), parse_ratings(twice)
    assert (a.duplicates_removed, b.duplicates_removed) == (0, len(rows))
    split_a = build_implicit(a, 20, torch.Generator().manual_seed(3))
    split_b = build_implicit(b, 20, torch.Generator().manual_seed(3))
    assert torch.equal(split_a.test.items, split_b.test.items) and torch.equal(split_a.val.items, split_b.val.items)
    assert torch.equal(split_a.train_item, split_b.train_item) and torch.equal(split_a.user_ptr, split_b.user_ptr)
    assert split_b.duplicates_removed == len(rows)
