"""Evaluation protocols for recommendation, and the per-user data every client holds.

* implicit feedback (He et al., "Neural Collaborative Filtering", WWW 2017): every interaction is a positive; each
  user's latest interaction is the *test* item and its second-latest the *validation* item, each ranked among 99
  items the user never interacted with (two independent draws); HR@10 and NDCG@10 average over users. Training pairs
  each positive with 4 negatives sampled afresh every round among the items that are not the user's *training*
  positives (as NCF does: a held-out item may be drawn as a training negative, so training never reads it).
* explicit ratings: a seeded per-user random split: `test_fraction` of each user's ratings (at least one) are the
  test set and as many again the validation set; RMSE over each.

Validation is what every choice reads (the round early stopping keeps, `fedge.recsys.selection`); test is measured
and reported, never read by a choice (tested by replacing the test items).

Both splits work on one row per (user, item) pair (`fedge.data.movielens.drop_duplicates`: the latest rating):
with a repeated pair, the copy left in training would reveal the held-out item, and HR@10 would measure memory.
`RecData.duplicates_removed` says how many rows that dropped (in the reader and here together).

Users are clients: `RecData` keeps each user's training interactions contiguous (CSR by user) so a round can pull
the rows of any batch of users with one gather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fedge.data.movielens import Ratings, drop_duplicates
from fedge.errors import DataError
from fedge.recsys.draws import Draws, index_within


@dataclass
class HeldOut:
    """One held-out set: implicit, `items` [U, 1 + negatives] (column 0 = each user's held-out item); explicit, the
    held-out (user, item, rating) triples."""

    items: torch.Tensor | None = None
    user: torch.Tensor | None = None
    item: torch.Tensor | None = None
    rating: torch.Tensor | None = None


@dataclass
class RecData:
    """Training interactions grouped by user, plus the validation and test sets of one protocol."""

    protocol: str
    num_users: int
    num_items: int
    train_user: torch.Tensor  # [n] sorted
    train_item: torch.Tensor  # [n]
    train_target: torch.Tensor  # [n] float: 1.0 (implicit) or the rating (explicit)
    user_ptr: torch.Tensor  # [U + 1] CSR offsets into train_*
    train_keys: torch.Tensor  # sorted user * I + item over the *training* interactions only
    val: HeldOut = field(default_factory=HeldOut)  # what every choice reads
    test: HeldOut = field(default_factory=HeldOut)  # measured and reported only
    rating_offset: float = 0.0  # explicit: midpoint of the rating scale, added to model outputs
    duplicates_removed: int = 0  # rows dropped because their (user, item) pair was rated again

    def user_rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(client index into `users`, row index into train_*) for every training interaction of `users`."""
        start, stop = self.user_ptr[users], self.user_ptr[users + 1]
        counts = stop - start
        client = torch.repeat_interleave(torch.arange(len(users)), counts)
        offsets = torch.cumsum(counts, 0) - counts
        rows = start[client] + torch.arange(int(counts.sum())) - offsets[client]
        return client, rows


def _csr(user: torch.Tensor, item: torch.Tensor, target: torch.Tensor, num_users: int):
    order = torch.argsort(user * (item.max() + 1 if len(item) else 1) + item, stable=True)
    user, item, target = user[order], item[order], target[order]
    ptr = torch.zeros(num_users + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(user, minlength=num_users), 0)
    return user, item, target, ptr


def _train_keys(user: torch.Tensor, item: torch.Tensor, num_items: int) -> torch.Tensor:
    return torch.sort(user * num_items + item).values


def _at_least_three(ratings: Ratings, what: str) -> torch.Tensor:
    counts = torch.bincount(ratings.user, minlength=ratings.num_users)
    if int(counts.min()) < 3:
        raise DataError(f"{ratings.name}: every user needs at least 3 {what} (training, validation, test)")
    return counts


def build_implicit(ratings: Ratings, eval_negatives: int, generator: torch.Generator) -> RecData:
    """Leave-latest-out split: each user's latest interaction is its test item, the second-latest its validation
    item, each ranked among `eval_negatives` never-seen items (NCF protocol, with a validation item added)."""
    ratings = drop_duplicates(ratings)
    num_users, num_items = ratings.num_users, ratings.num_items
    counts = _at_least_three(ratings, "interactions")
    # Sort by (user, timestamp, row): a user's last row is its test item, the one before its validation item.
    n = len(ratings.user)
    key = torch.argsort(ratings.timestamp, stable=True)
    key = key[torch.argsort(ratings.user[key], stable=True)]
    last = torch.cumsum(counts, 0) - 1
    test_rows, val_rows = key[last], key[last - 1]
    held = torch.zeros(n, dtype=torch.bool)
    held[test_rows] = True
    held[val_rows] = True
    seen = torch.zeros(num_users, num_items, dtype=torch.bool)
    seen[ratings.user, ratings.item] = True
    never = (~seen).to(torch.float32)
    if int(never.sum(1).min()) < eval_negatives:
        raise DataError(f"{ratings.name}: a user has fewer than {eval_negatives} never-seen items to rank against")
    val_negatives = torch.multinomial(never, eval_negatives, replacement=False, generator=generator)
    test_negatives = torch.multinomial(never, eval_negatives, replacement=False, generator=generator)
    tr = ~held
    u, i, t, ptr = _csr(ratings.user[tr], ratings.item[tr], torch.ones(int(tr.sum())), num_users)
    return RecData("implicit", num_users, num_items, u, i, t, ptr, _train_keys(u, i, num_items),
                   val=HeldOut(items=torch.cat([ratings.item[val_rows][:, None], val_negatives], dim=1)),
                   test=HeldOut(items=torch.cat([ratings.item[test_rows][:, None], test_negatives], dim=1)),
                   duplicates_removed=ratings.duplicates_removed)


def build_explicit(ratings: Ratings, test_fraction: float, generator: torch.Generator) -> RecData:
    """Per-user random hold-out: `test_fraction` of each user's ratings (at least one) for test, as many again for
    validation (at least one), at least one left for training."""
    ratings = drop_duplicates(ratings)
    num_users, num_items = ratings.num_users, ratings.num_items
    counts = _at_least_three(ratings, "ratings")
    order = torch.randperm(len(ratings.user), generator=generator)
    order = order[torch.argsort(ratings.user[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - starts[ratings.user[order]]
    share = torch.clamp((counts.to(torch.float64) * test_fraction).round().long(), 1, None)
    n_test = torch.minimum(share, counts - 2)
    n_val = torch.minimum(share, counts - 1 - n_test)
    is_test = rank < n_test[ratings.user]
    is_val = ~is_test & (rank < (n_test + n_val)[ratings.user])
    tr = ~(is_test | is_val)
    u, i, t, ptr = _csr(ratings.user[tr], ratings.item[tr], ratings.rating[tr], num_users)
    lo, hi = float(ratings.rating.min()), float(ratings.rating.max())

    def held(mask: torch.Tensor) -> HeldOut:
        return HeldOut(user=ratings.user[mask], item=ratings.item[mask], rating=ratings.rating[mask])

    return RecData("explicit", num_users, num_items, u, i, t, ptr, _train_keys(u, i, num_items), val=held(is_val),
                   test=held(is_test), rating_offset=(lo + hi) / 2, duplicates_removed=ratings.duplicates_removed)


def sample_negatives(data: RecData, users: torch.Tensor, draws: Draws, index: torch.Tensor | None = None,
                     tries: int = 50) -> torch.Tensor:
    """Training negatives: items drawn uniformly among those that are not each user's training positives (its
    validation and test items may be drawn, as in NCF); one draw per entry of `users`.

    Entry e is draw `index[e]` of user `users[e]` (default: its position among that user's entries), so a user's
    negatives depend on nothing but (seed, purpose, round, user). Rejection sampling against the sorted training
    keys: every round of redraws (attempt t uses counter t) is one vectorised op.
    """
    index = index_within(users) if index is None else index
    items = _items(data, draws.uniform(users, index, 0))
    pending = torch.arange(len(users))  # entries whose latest draw is not checked yet
    for attempt in range(1, tries + 1):
        keys = users[pending] * data.num_items + items[pending]
        pos = torch.searchsorted(data.train_keys, keys).clamp_max(len(data.train_keys) - 1)
        pending = pending[data.train_keys[pos] == keys]
        if len(pending) == 0:
            return items
        items[pending] = _items(data, draws.uniform(users[pending], index[pending], attempt))
    raise DataError("could not sample negative items (a user has trained on almost every item)")


def _items(data: RecData, uniform: torch.Tensor) -> torch.Tensor:
    return (uniform.to(torch.float64) * data.num_items).long().clamp_max(data.num_items - 1)


def rank_of_positive(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of column 0 among each row; ties count against the positive (pessimistic)."""
    return (scores[:, 1:] >= scores[:, :1]).sum(dim=1)


def hit_ndcg(scores: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k for rows whose column 0 is the single relevant item (He et al. 2017).

    HR@k = mean[rank < k]; NDCG@k = mean[rank < k] / log2(rank + 2), with rank 0-based.
    """
    rank = rank_of_positive(scores).to(torch.float64)
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank))
    return float(hit.to(torch.float64).mean()), float(ndcg.mean())


def rmse(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return math.sqrt(float(((predicted.to(torch.float64) - target.to(torch.float64)) ** 2).mean()))


__all__ = ["HeldOut", "RecData", "build_explicit", "build_implicit", "hit_ndcg", "rank_of_positive", "rmse",
           "sample_negatives"]
