"""Measuring a recommendation run: validation and test metrics with an algorithm's own predictor, and the top-K
lists and item table a run exports for the edge-caching issue (`fedge.recsys.runner` calls them)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from fedge.data.movielens import Ratings
from fedge.output import atomic_write_bytes
from fedge.recsys.algorithms.base import RecAlgorithm, RecState
from fedge.recsys.config import RecsysConfig
from fedge.recsys.draws import Draws
from fedge.recsys.protocol import HeldOut, RecData, hit_ndcg, rmse
from fedge.runfolder import check_finite


def score(algo: RecAlgorithm, state: RecState, data: RecData, held: HeldOut, draws: Draws,
          where: str = "evaluation", hint: str = "lower train.lr") -> dict[str, float]:
    """HR@10/NDCG@10 (implicit) or RMSE (explicit) on one held-out set, with the algorithm's own predictor. Scores
    that are not finite raise `Diverged` (`where` and `hint` go into its message): a NaN never ranks below the
    positive."""
    if data.protocol == "implicit":
        assert held.items is not None
        users = torch.arange(data.num_users).repeat_interleave(held.items.shape[1])
        scores = algo.predict(state, users, held.items.reshape(-1), draws)
        check_finite(scores, "model's scores", where, hint)
        hr, ndcg = hit_ndcg(scores.reshape(held.items.shape), k=10)
        return {"hr@10": hr, "ndcg@10": ndcg}
    assert held.user is not None and held.item is not None and held.rating is not None
    pred = algo.predict(state, held.user, held.item, draws)
    check_finite(pred, "model's predictions", where, hint)
    return {"rmse": rmse(pred, held.rating)}


def evaluate(algo: RecAlgorithm, state: RecState, data: RecData, draws: Draws, where: str = "evaluation",
             hint: str = "lower train.lr") -> dict[str, float]:
    """The validation metrics (`val_hr@10`, `val_ndcg@10` or `val_rmse`) and the test ones (`test_...`), scored with
    the same state and draws. Only the validation ones are read by a choice (`fedge.recsys.selection`)."""
    out = {f"val_{k}": v for k, v in score(algo, state, data, data.val, draws, where, hint).items()}
    out.update({f"test_{k}": v for k, v in score(algo, state, data, data.test, draws, where, hint).items()})
    return out


def top_k(algo: RecAlgorithm, state: RecState, data: RecData, k: int, draws: Draws,
          users_per_chunk: int = 64) -> torch.Tensor:
    """[U, k] item indices: each user's best-scored items among those not in its training data."""
    out = []
    for lo in range(0, data.num_users, users_per_chunk):
        users = torch.arange(lo, min(lo + users_per_chunk, data.num_users))
        u = users.repeat_interleave(data.num_items)
        i = torch.arange(data.num_items).repeat(len(users))
        scores = algo.predict(state, u, i, draws).reshape(len(users), data.num_items)
        client, rows = data.user_rows(users)
        scores[client, data.train_item[rows]] = float("-inf")
        out.append(torch.topk(scores, min(k, data.num_items), dim=1).indices)
    return torch.cat(out)


def export(algo: RecAlgorithm, state: RecState, data: RecData, ratings: Ratings, cfg: RecsysConfig, out: Path,
           draws: Draws) -> None:
    """item_embeddings.pt (item table + raw movie ids) and topk.json (raw user id -> raw movie ids)."""
    item = state.shared["item"].detach().clone()
    payload = {"item_embeddings": item, "item_ids": torch.from_numpy(ratings.item_ids.copy()),
               "algorithm": cfg.algorithm}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(out / "item_embeddings.pt", buffer.getvalue())
    best = top_k(algo, state, data, cfg.top_k, draws)
    ids = ratings.item_ids[best.numpy()]
    topk = {"k": cfg.top_k, "users": {str(int(u)): [int(x) for x in row] for u, row in zip(ratings.user_ids, ids,
                                                                                          strict=True)}}
    atomic_write_bytes(out / "topk.json", (json.dumps(topk) + "\n").encode())


__all__ = ["evaluate", "export", "score", "top_k"]
