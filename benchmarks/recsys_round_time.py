"""Time one full federated epoch (every ml-latest-small user trains once) per algorithm.

    python benchmarks/recsys_round_time.py --data-dir ../shared/data/movielens/ml-latest-small [--threads 2]

Prints, per algorithm, the mean wall time of a round over `--rounds` rounds (after one warm-up round) and the
upload MB per round. A round = batch construction + batched local training of all 610 users + aggregation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fedge.config import build
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.config import RecsysConfig
from fedge.recsys.runner import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--algorithms", nargs="+", default=["fedmf", "fedncf", "fedmeta", "dfedmf"])
    parser.add_argument("--payloads", choices=["count", "encode"], default="count")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = {"data": {"data_dir": str(args.data_dir)}, "train": {"payloads": args.payloads}}
    ratings = None
    for name in args.algorithms:
        dim = 16 if name in ("fedncf", "dfedncf") else 32
        cfg = build(RecsysConfig, {**base, "algorithm": name, "model": {"dim": dim}})
        ratings, data = prepare(cfg, ratings)
        algo = ALGORITHMS[name](Context(cfg, data))
        gen = torch.Generator().manual_seed(0)
        state = algo.init_state(gen)
        users = torch.arange(data.num_users)
        times, mb = [], 0.0
        for rnd in range(args.rounds + 1):
            start = time.perf_counter()
            report = algo.server_aggregate(state, algo.client_round(state, users, gen))
            if rnd > 0:
                times.append(time.perf_counter() - start)
                mb = report.bytes_up / 1e6
        print(f"{name:8s} users={data.num_users} s/round={sum(times) / len(times):.2f} "
              f"(min {min(times):.2f}) MB up/round={mb:.1f} threads={args.threads} payloads={args.payloads}")


if __name__ == "__main__":
    main()
