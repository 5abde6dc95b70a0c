"""Run a recommendation experiment: load, split, train round by round, evaluate, write the run folder.

Run folder: `metrics.jsonl` (one object per round), `summary.json` (final metrics + resolved config),
`item_embeddings.pt` (the shared item table; per edge for decentralized runs) and `topk.json` (each user's top-K
unseen items, raw MovieLens ids) for the edge-caching issue.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from fedge.config import to_dict
from fedge.data.movielens import Ratings, load_movielens
from fedge.output import JsonlWriter, atomic_write_bytes, atomic_write_json, progress_bar
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context, RecAlgorithm, RecState
from fedge.recsys.config import RecsysConfig
from fedge.recsys.protocol import RecData, build_explicit, build_implicit, hit_ndcg, rmse

MB = 1e6


def prepare(cfg: RecsysConfig, ratings: Ratings | None = None) -> tuple[Ratings, RecData]:
    """Load (unless given) and split the ratings under the configured protocol, seeded."""
    if ratings is None:
        ratings = load_movielens(cfg.data.dataset, cfg.data.data_dir, cfg.data.download)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.data.protocol == "implicit":
        return ratings, build_implicit(ratings, cfg.data.eval_negatives, gen)
    return ratings, build_explicit(ratings, cfg.data.test_fraction, gen)


def evaluate(algo: RecAlgorithm, state: RecState, data: RecData, generator: torch.Generator) -> dict[str, float]:
    """HR@10/NDCG@10 (implicit) or RMSE (explicit) over all users, with the algorithm's own predictor."""
    if data.protocol == "implicit":
        assert data.eval_items is not None
        users = torch.arange(data.num_users).repeat_interleave(data.eval_items.shape[1])
        scores = algo.predict(state, users, data.eval_items.reshape(-1), generator)
        hr, ndcg = hit_ndcg(scores.reshape(data.eval_items.shape), k=10)
        return {"hr@10": hr, "ndcg@10": ndcg}
    assert data.test_user is not None and data.test_item is not None and data.test_rating is not None
    pred = algo.predict(state, data.test_user, data.test_item, generator)
    return {"rmse": rmse(pred, data.test_rating)}


def top_k(algo: RecAlgorithm, state: RecState, data: RecData, k: int, generator: torch.Generator,
          users_per_chunk: int = 64) -> torch.Tensor:
    """[U, k] item indices: each user's best-scored items among those not in its training data."""
    out = []
    for lo in range(0, data.num_users, users_per_chunk):
        users = torch.arange(lo, min(lo + users_per_chunk, data.num_users))
        u = users.repeat_interleave(data.num_items)
        i = torch.arange(data.num_items).repeat(len(users))
        scores = algo.predict(state, u, i, generator).reshape(len(users), data.num_items)
        client, rows = data.user_rows(users)
        scores[client, data.train_item[rows]] = float("-inf")
        out.append(torch.topk(scores, min(k, data.num_items), dim=1).indices)
    return torch.cat(out)


def run(cfg: RecsysConfig, ratings: Ratings | None = None, write: bool = True) -> dict[str, Any]:
    """Train and evaluate `cfg.algorithm`; returns the summary (also written to `cfg.out_dir`)."""
    ratings, data = prepare(cfg, ratings)
    algo: RecAlgorithm = ALGORITHMS[cfg.algorithm](Context(cfg, data))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    state = algo.init_state(gen)
    out = Path(cfg.out_dir)
    writer = JsonlWriter(out / "metrics.jsonl") if write else None
    totals = {"bytes_up": 0, "bytes_down": 0, "bytes_peer": 0}
    metrics: dict[str, float] = {}
    scoring = state  # the state the devices scored with at the last evaluation (the last round always evaluates)
    round_times: list[float] = []
    per_round = max(1, round(cfg.train.client_fraction * data.num_users))
    with progress_bar(f"recsys {cfg.algorithm}", cfg.train.rounds, enabled=cfg.progress) as advance:
        for rnd in range(1, cfg.train.rounds + 1):
            start = time.perf_counter()
            users = torch.randperm(data.num_users, generator=gen)[:per_round].sort().values
            uploads = algo.client_round(state, users, gen)
            report = algo.server_aggregate(state, uploads)
            round_times.append(time.perf_counter() - start)
            for key in totals:
                totals[key] += getattr(report, key)
            record: dict[str, Any] = {"round": rnd, "clients": len(users), "loss": report.loss,
                                      "round_s": round_times[-1], "mb_up": report.bytes_up / MB,
                                      "mb_down": report.bytes_down / MB, "mb_peer": report.bytes_peer / MB,
                                      "mb_total": sum(totals.values()) / MB, **report.extra}
            if rnd % cfg.eval_every == 0 or rnd == cfg.train.rounds:
                scoring = algo.scoring_state(state, torch.Generator().manual_seed(cfg.seed + 4))
                metrics = evaluate(algo, scoring, data, torch.Generator().manual_seed(cfg.seed + 2))
                record.update(metrics)
            if writer is not None:
                writer.write(record)
            status = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            advance(1, status=f"loss={report.loss:.4f} {status}")
    if writer is not None:
        writer.close()
    summary: dict[str, Any] = {
        "algorithm": cfg.algorithm, "dataset": cfg.data.dataset, "protocol": data.protocol,
        "users": data.num_users, "items": data.num_items, "rounds": cfg.train.rounds, **metrics,
        "mb_up": totals["bytes_up"] / MB, "mb_down": totals["bytes_down"] / MB,
        "mb_peer": totals["bytes_peer"] / MB, "mb_total": sum(totals.values()) / MB,
        "mean_round_s": sum(round_times) / len(round_times), "config": to_dict(cfg),
    }
    if write:
        export(algo, scoring, data, ratings, cfg, out, torch.Generator().manual_seed(cfg.seed + 3))
        atomic_write_json(out / "summary.json", summary)
    return summary


def export(algo: RecAlgorithm, state: RecState, data: RecData, ratings: Ratings, cfg: RecsysConfig, out: Path,
           generator: torch.Generator) -> None:
    """item_embeddings.pt (item table + raw movie ids) and topk.json (raw user id -> raw movie ids)."""
    item = state.shared["item"].detach().clone()
    payload = {"item_embeddings": item, "item_ids": torch.from_numpy(ratings.item_ids.copy()),
               "algorithm": cfg.algorithm}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(out / "item_embeddings.pt", buffer.getvalue())
    best = top_k(algo, state, data, cfg.top_k, generator)
    ids = ratings.item_ids[best.numpy()]
    topk = {"k": cfg.top_k, "users": {str(int(u)): [int(x) for x in row] for u, row in zip(ratings.user_ids, ids,
                                                                                          strict=True)}}
    atomic_write_bytes(out / "topk.json", (json.dumps(topk) + "\n").encode())


__all__ = ["evaluate", "export", "prepare", "run", "top_k"]
