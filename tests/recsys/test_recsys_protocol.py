from __future__ import annotations

import math

import torch

from fedge.core.streams import Streams
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


def test_implicit_split_holds_out_latest_and_unseen_negatives(tiny) -> None:
    data = build_implicit(tiny, 20, torch.Generator().manual_seed(0))
    for u in range(tiny.num_users):
        mine = tiny.user == u
        latest = tiny.item[mine][torch.argmax(tiny.timestamp[mine])]
        assert int(data.eval_items[u, 0]) == int(latest)
        negs = set(data.eval_items[u, 1:].tolist())
        assert len(negs) == 20 and not negs & set(tiny.item[mine].tolist())
        train = data.train_item[data.user_ptr[u]: data.user_ptr[u + 1]].tolist()
        assert sorted(train) == sorted(set(tiny.item[mine].tolist()) - {int(latest)})
    users = torch.arange(tiny.num_users).repeat(50)
    draws = Draws(Streams(1), "recsys-train/negatives", 3)
    negatives = sample_negatives(data, users, draws)
    seen = set((tiny.user * tiny.num_items + tiny.item).tolist())
    assert not set((users * tiny.num_items + negatives).tolist()) & seen
    # A user's draws depend on nothing but (seed, purpose, round, user): not on who else is in the batch
    alone = sample_negatives(data, torch.full((50,), 5), draws)
    assert torch.equal(alone, negatives[users == 5])
    assert not torch.equal(alone, sample_negatives(data, torch.full((50,), 5), Draws(Streams(1), "x", 3)))


def test_explicit_split_is_per_user_and_disjoint(tiny) -> None:
    data = build_explicit(tiny, 0.25, torch.Generator().manual_seed(0))
    counts = torch.bincount(tiny.user)
    test_counts = torch.bincount(data.test_user, minlength=tiny.num_users)
    assert torch.equal(test_counts, torch.clamp((counts * 0.25).round().long(), 1, None))
    assert len(data.train_item) + len(data.test_item) == len(tiny)
    train = set((data.train_user * tiny.num_items + data.train_item).tolist())
    test = set((data.test_user * tiny.num_items + data.test_item).tolist())
    assert not train & test and data.rating_offset == (1.0 + 5.0) / 2
