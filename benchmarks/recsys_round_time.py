"""Time one full federated epoch (every ml-latest-small user trains once) per algorithm.

    python benchmarks/recsys_round_time.py --data-dir ../shared/data/movielens/ml-latest-small [--threads 1] \
        [--config configs/recsys-fedmf.yaml] [--transport direct|loopback]

Prints, per algorithm, the mean wall time of a round over `--rounds` rounds (after one warm-up round) and the MB
devices sent and received per round (from the transport's ledger). A round = item requests and downloads, batch
construction, batched local training of all 610 users, uploads and aggregation (and, decentralized, the edge-edge
exchange). With `--config` the algorithm and its settings come from that file (e.g. the shipped fedmf config, 4
local epochs); otherwise each of `--algorithms` runs with the defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fedge.config import load_yaml
from fedge.recsys.algorithms import build as build_algorithm
from fedge.recsys.algorithms.base import Context
from fedge.recsys.defaults import recsys_config
from fedge.recsys.runner import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config", type=Path, help="a recsys config (overrides --algorithms)")
    parser.add_argument("--algorithms", nargs="+", default=["fedmf", "fedncf", "fedmeta", "dfedmf"])
    parser.add_argument("--transport", choices=["direct", "loopback"], default="direct")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mappings = []
    if args.config:
        mappings.append(load_yaml(args.config))
    else:
        for name in args.algorithms:
            mappings.append({"algorithm": name})  # each algorithm's tuned defaults (fedge.recsys.defaults)
    ratings = None
    for mapping in mappings:
        mapping = {**mapping, "data": {**mapping.get("data", {}), "data_dir": str(args.data_dir)},
                   "runtime": {"transport": args.transport}}
        cfg = recsys_config(mapping)
        ratings, data = prepare(cfg, ratings)
        ctx = Context(cfg, data)
        algo = build_algorithm(ctx)
        ledger = ctx.transport.ledger
        state = algo.init_state(ctx.streams.generator("recsys-init"))
        users = torch.arange(data.num_users)
        times, up, down = [], 0.0, 0.0
        for rnd in range(1, args.rounds + 2):
            ledger.begin_round()
            start = time.perf_counter()
            algo.server_aggregate(state, algo.client_round(state, users, rnd), rnd)
            if rnd > 1:
                times.append(time.perf_counter() - start)
                up, down = float(ledger.device_sent.sum()) / 1e6, float(ledger.device_received.sum()) / 1e6
        print(f"{cfg.algorithm:8s} users={data.num_users} s/round={sum(times) / len(times):.2f} "
              f"(min {min(times):.2f}) MB up/round={up:.1f} MB down/round={down:.1f} threads={args.threads} "
              f"transport={args.transport}")


if __name__ == "__main__":
    main()
