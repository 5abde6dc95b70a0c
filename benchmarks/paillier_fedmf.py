"""Paillier's exact weighted sum of one round of recsys fedmf item deltas on ml-latest-small (issue 16, acceptance 5).

    OMP_NUM_THREADS=1 python -m benchmarks.paillier_fedmf [--data-dir ../shared/data/movielens/ml-latest-small]
        [--clients 10] [--items 64]

1. One round of fedmf (its tuned defaults, `fedge.recsys.defaults`; every user takes part) through the public recsys
   API, unchanged: `FederatedRecommender.client_round` returns each client's item-factor deltas of the rows it
   touched (`Uploads`), exactly what fedmf would upload.
2. Whole-catalogue uploads, as secure aggregation of fedmf needs (a sparse upload would reveal which items a user
   touched): each client's vector is its delta row of every item (zeros where it touched none) followed by one
   touched-indicator per item, so the server learns per item the sum of the deltas *and* how many clients touched
   it — fedmf's per-item average — without learning who touched what. Paillier (`fedge.secure.he.Paillier`, 2048-bit
   keys, x ↦ round((clip(x) + 1)·2^24), 43 values per ciphertext) encrypts them; the server multiplies the
   ciphertexts raised to the clients' integer weights (here 1: fedmf's sum); one client decrypts.
3. Exactness: the decrypted slots equal, as integers, the plaintext fixed-point weighted sum Σ_u w_u · encode(x_u).

Paillier encryption costs ~0.14 s per ciphertext, so a whole-catalogue round (9,724 items × (32 + 1) values per
client, ~7,500 ciphertexts each) is out of reach here: the run takes the first `--clients` clients of the round (by
user id) and the `--items` items most touched in the round, and reports the whole-catalogue cost extrapolated from
the measured seconds per ciphertext (labelled as such). A measurement, not a test; results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.recsys.algorithms.base import Context
from fedge.recsys.algorithms.registry import build
from fedge.recsys.defaults import recsys_config
from fedge.recsys.runner import prepare, select_clients
from fedge.runfolder import environment
from fedge.secure.he import Paillier


def fedmf_round(data_dir: str) -> tuple[Any, torch.Tensor, Any]:
    """(the data, the round's users, their uploads) of round 1 of fedmf with its tuned defaults."""
    cfg = recsys_config({"algorithm": "fedmf", "data": {"data_dir": data_dir}})
    _, data = prepare(cfg)
    ctx = Context(cfg, data)
    algo = build(ctx)
    state = algo.init_state(ctx.streams.generator("recsys-init"))
    per_round = max(1, round(cfg.train.client_fraction * data.num_users))
    users = select_clients(ctx.streams, 1, data.num_users, per_round)
    uploads = algo.client_round(state, users, 1)
    assert uploads is not None
    return data, users, uploads


def whole_catalogue(uploads: Any, clients: list[int], items: torch.Tensor) -> np.ndarray:
    """[len(clients), len(items)·(di + 1)] float64: each client's delta rows of `items` (zeros where untouched),
    then one touched-indicator per item."""
    di = uploads.item_dim
    column = torch.full((uploads.num_items,), -1, dtype=torch.long)
    column[items] = torch.arange(len(items))
    out = np.zeros((len(clients), len(items) * (di + 1)))
    for row, client in enumerate(clients):
        mine = (uploads.pair_client == client) & (column[uploads.pair_item] >= 0)
        cols = column[uploads.pair_item[mine]].numpy()
        deltas = uploads.item_rows[mine].to(torch.float64).numpy()
        block = out[row, :len(items) * di].reshape(len(items), di)
        block[cols] = deltas
        out[row, len(items) * di + cols] = 1.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens/ml-latest-small")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--out", default=f"benchmarks/results/paillier-fedmf-{datetime.date.today()}.json")
    args = parser.parse_args()

    clock = time.perf_counter()
    data, users, uploads = fedmf_round(args.data_dir)
    round_s = time.perf_counter() - clock
    clients = list(range(min(args.clients, uploads.num_clients)))  # index into `users`, which are in id order
    touched = torch.bincount(uploads.pair_item, minlength=uploads.num_items)
    items = torch.sort(torch.argsort(touched, descending=True, stable=True)[:args.items]).values
    vectors = whole_catalogue(uploads, clients, items)
    weights = [1] * len(clients)

    scheme = Paillier(key_bits=2048, precision_bits=24, clip=1.0)
    clock = time.perf_counter()
    encrypted = [scheme.encrypt(v) for v in vectors]
    encrypt_s = time.perf_counter() - clock
    clock = time.perf_counter()
    aggregate = scheme.weighted_sum(encrypted, weights)
    aggregate_s = time.perf_counter() - clock
    clock = time.perf_counter()
    sums = scheme.decrypt_sum(aggregate, vectors.shape[1])
    decrypt_s = time.perf_counter() - clock

    plain = [sum(w * q for w, q in zip(weights, column)) for column in zip(*(scheme.encode(v) for v in vectors))]
    di = uploads.item_dim
    mean = scheme.decode_mean(sums, sum(weights))  # per slot: Σ w x / W
    count = np.rint(mean[len(items) * di:] * len(clients)).astype(int)  # clients that touched each item
    per_item = (mean[:len(items) * di].reshape(len(items), di) * len(clients)) / np.maximum(count, 1)[:, None]
    float_sum = vectors[:, :len(items) * di].sum(axis=0).reshape(len(items), di)
    float_mean = float_sum / np.maximum(count, 1)[:, None]
    ciphertexts = len(encrypted[0])
    per_ciphertext_s = encrypt_s / (ciphertexts * len(clients))
    catalogue_values = data.num_items * (di + 1)
    catalogue_ciphertexts = math.ceil(catalogue_values / scheme.slots_per_ciphertext)
    results = {
        "environment": environment(), "dataset": "ml-latest-small", "algorithm": "fedmf (tuned defaults), round 1",
        "round_users": len(users), "round_training_s": round_s, "num_items": data.num_items, "item_dim": di,
        "subset": {"clients": len(clients), "client_user_ids": users[clients].tolist(), "items": len(items),
                   "item_ids": items.tolist(), "touched_pairs_in_subset": int(count.sum())},
        "values_per_client": vectors.shape[1], "slots_per_ciphertext": scheme.slots_per_ciphertext,
        "ciphertexts_per_client": ciphertexts, "upload_bytes_per_client": sum(len(b) for b in encrypted[0]),
        "fp32_bytes_per_client": 4 * vectors.shape[1], "aggregate_bytes": sum(len(b) for b in aggregate),
        "seconds": {"encrypt_all_clients": encrypt_s, "aggregate": aggregate_s, "decrypt": decrypt_s,
                    "encrypt_per_ciphertext": per_ciphertext_s},
        "exact": sums == plain, "max_abs_delta": float(np.abs(vectors[:, :len(items) * di]).max()),
        "clipped_values": int((np.abs(vectors) > scheme.clip).sum()),
        "per_item_mean_max_abs_error": float(np.abs(per_item - float_mean).max()),
        "whole_catalogue_extrapolated": {"values_per_client": catalogue_values,
                                         "ciphertexts_per_client": catalogue_ciphertexts,
                                         "upload_bytes_per_client": catalogue_ciphertexts * scheme.ciphertext_bytes,
                                         "encrypt_s_per_client": catalogue_ciphertexts * per_ciphertext_s},
    }
    results["upload_vs_fp32"] = results["upload_bytes_per_client"] / results["fp32_bytes_per_client"]
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k not in ("environment", "subset")}, indent=1))
    if not results["exact"]:
        raise SystemExit("the decrypted sum differs from the plaintext fixed-point sum")


if __name__ == "__main__":
    main()
