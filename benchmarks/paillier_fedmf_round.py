"""Paillier over a whole round of recsys fedmf on ml-latest-small: every user, every item row it uploads (issue 16,
acceptance 5).

    OMP_NUM_THREADS=1 python -m benchmarks.paillier_fedmf_round [--workers 2]

Round 1 of fedmf with its tuned defaults (every one of the 610 users takes part; `interacted` uploads, fedmf's
default) through the public recsys API unchanged (`FederatedRecommender.client_round`). Each client encrypts each
item row it uploads — 32 factors + 1 bias, fixed point x ↦ round((clip(x) + 1)·2^24) in one 2048-bit Paillier
plaintext of 43 slots (`fedge.secure.he.Paillier`) — and the server multiplies, per item, the ciphertexts of the
clients that uploaded it (Enc(Σ x)), then one client decrypts the per-item sums. The server divides by the number
of clients per item, which it knows: in `interacted` mode the item requests already tell it which items a client
touches (`fedge.recsys.exchange`); Paillier hides the values, not the touched set. Hiding the set too needs
whole-catalogue uploads (benchmarks/paillier_fedmf.py measures those on a subset and extrapolates: 7,689 ciphertexts
per client; `fedge recsys --upload full --set secure.aggregation=secagg+` does it with masking).

Exactness: the decrypted slots equal, as integers, the plaintext fixed-point sums Σ_u encode(x_u) of every item;
the per-item means then differ from the float ones by at most 2^-24. Encryption is spread over `--workers`
processes (devices encrypt in parallel in a deployment; `encrypt_summed_over_workers` adds up the time each worker
spent encrypting, i.e. all devices' encryption time together; the 2026-12-02 result file names it
`encrypt_cpu_all_clients`, though it is measured with each worker's wall clock). `phe` uses gmpy2 when installed
(the `secure` extra), about 6× faster than Python integers here. A measurement, not a test; results go to
benchmarks/results/ with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.paillier_fedmf import fedmf_round
from fedge.runfolder import environment
from fedge.secure.he import Paillier

_SCHEME: Paillier | None = None  # the workers' copy of the public key (inherited by fork)


def _encrypt_rows(rows: np.ndarray) -> tuple[list[bytes], float]:
    """Encrypt each row (one item's values) into one ciphertext; (ciphertexts, seconds)."""
    assert _SCHEME is not None
    clock = time.perf_counter()
    out = []
    for row in rows:
        (blob,) = _SCHEME.encrypt(row)
        out.append(blob)
    return out, time.perf_counter() - clock


def main() -> None:
    global _SCHEME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/movielens/ml-latest-small")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=0, help="only the first N (client, item) rows (a smoke run)")
    parser.add_argument("--out", default=f"benchmarks/results/paillier-fedmf-round-{datetime.date.today()}.json")
    args = parser.parse_args()

    clock = time.perf_counter()
    data, users, uploads = fedmf_round(args.data_dir)
    round_s = time.perf_counter() - clock
    rows = uploads.item_rows.to(torch.float64).numpy()  # [P, 33]: one row per (client, item) pair, client-major
    items = uploads.pair_item.numpy()
    if args.pairs:
        rows, items = rows[:args.pairs], items[:args.pairs]
    _SCHEME = Paillier(key_bits=2048, precision_bits=24, clip=1.0)
    assert rows.shape[1] <= _SCHEME.slots_per_ciphertext

    chunks = np.array_split(np.arange(len(rows)), max(1, args.workers * 8))
    clock = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        parts = list(pool.map(_encrypt_rows, [rows[c] for c in chunks]))
    encrypt_wall_s = time.perf_counter() - clock
    ciphertexts = [blob for blobs, _ in parts for blob in blobs]
    encrypt_cpu_s = sum(seconds for _, seconds in parts)  # each worker's own clock, summed: all clients' encryption

    clock = time.perf_counter()  # the server: per item, the product of the ciphertexts uploaded for it
    nsquare = _SCHEME.public_key.nsquare
    aggregate: dict[int, int] = {}
    for item, blob in zip(items.tolist(), ciphertexts, strict=True):
        value = int.from_bytes(blob, "little")
        aggregate[item] = aggregate[item] * value % nsquare if item in aggregate else value
    aggregate_s = time.perf_counter() - clock

    clock = time.perf_counter()  # one client decrypts the per-item sums
    width = rows.shape[1]
    blobs = {item: value.to_bytes(_SCHEME.ciphertext_bytes, "little") for item, value in aggregate.items()}
    sums = {item: _SCHEME.decrypt_sum([blob], width) for item, blob in blobs.items()}
    decrypt_s = time.perf_counter() - clock

    encoded = np.array([_SCHEME.encode(row) for row in rows], dtype=object)
    exact, worst = True, 0.0
    counts = np.bincount(items, minlength=data.num_items)
    for item, got in sums.items():
        mine = items == item
        plain = [int(v) for v in encoded[mine].sum(axis=0)]
        exact &= got == plain
        mean = np.array(got, dtype=np.float64) / (counts[item] * 2.0 ** 24) - 1.0
        worst = max(worst, float(np.abs(mean - rows[mine].mean(axis=0)).max()))
    per_client = np.bincount(uploads.pair_client.numpy()[:len(rows)], minlength=uploads.num_clients)
    results: dict[str, Any] = {
        "environment": environment(), "dataset": "ml-latest-small", "upload": "interacted",
        "algorithm": "fedmf (tuned defaults), round 1", "round_users": len(users), "round_training_s": round_s,
        "subset_pairs": args.pairs or None,
        "num_items": data.num_items, "items_uploaded": len(sums), "item_dim": width, "pairs": len(rows),
        "ciphertexts": len(ciphertexts), "ciphertexts_per_client": {"mean": float(per_client.mean()),
                                                                    "max": int(per_client.max())},
        "ciphertext_bytes": _SCHEME.ciphertext_bytes,
        "upload_bytes": len(ciphertexts) * _SCHEME.ciphertext_bytes, "fp32_upload_bytes": 4 * rows.size,
        "seconds": {"encrypt_summed_over_workers": encrypt_cpu_s, "encrypt_wall": encrypt_wall_s,
                    "encrypt_per_ciphertext": encrypt_cpu_s / len(ciphertexts),
                    "encrypt_per_client_mean": encrypt_cpu_s / len(users), "aggregate": aggregate_s,
                    "decrypt": decrypt_s, "workers": args.workers},
        "exact": bool(exact), "per_item_mean_max_abs_error": worst,
        "clipped_values": int((np.abs(rows) > 1.0).sum()), "max_abs_delta": float(np.abs(rows).max()),
        "phe_uses_gmpy2": _gmpy2(),
    }
    results["upload_vs_fp32"] = results["upload_bytes"] / results["fp32_upload_bytes"]
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}, indent=1))
    if not exact:
        raise SystemExit("the decrypted sums differ from the plaintext fixed-point sums")


def _gmpy2() -> bool:
    try:
        import gmpy2  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
