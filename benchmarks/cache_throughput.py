"""Requests per second of every heuristic caching policy on one core (issue target: >= 100,000).

Usage: python benchmarks/cache_throughput.py [--requests 200000] [--movielens ../shared/data/movielens/ml-latest-small]
The simulator is single-threaded Python (one core). Times `simulate` only (trace, similarity table and policy set-up
excluded), soft hits on, cooperation on, 4 edges, capacity 5 % of the catalogue. The target is checked against CPU
time of this process (time.process_time), which is what one core delivers even when other jobs share the machine;
wall-clock rates are printed too. Exits 1 if any policy is below the target.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fedge.caching.config import HEURISTICS, CacheConfig, TraceConfig
from fedge.caching.rng import acceptance_draws
from fedge.caching.similarity import SoftHitTable, item_embeddings
from fedge.caching.simulator import CostModel, make_policies, simulate
from fedge.caching.trace import build_trace

TARGET = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--movielens", type=Path, help="also time the MovieLens trace from this folder")
    args = parser.parse_args()
    cfg = CacheConfig()
    traces = [TraceConfig(kind="synthetic", num_items=10_000, requests_per_episode=args.requests // 10, episodes=10)]
    if args.movielens:
        traces.append(TraceConfig(kind="movielens", data_dir=args.movielens, requests_per_episode=10_000, episodes=11))
    ok = True
    for tcfg in traces:
        trace = build_trace(tcfg, cfg.network.edges, 0)
        emb, source = item_embeddings(trace, None, tcfg.data_dir, tcfg.embedding_dim, tcfg.clusters, 0)
        table = SoftHitTable.build(emb, cfg.soft_hits)
        cap = cfg.network.capacity_items(trace.num_items)
        model = CostModel.from_config(cfg.cost, cfg.network)
        u = acceptance_draws(0, len(trace))
        print(f"{trace.name}: {len(trace)} requests, {trace.num_items} items, C={cap}, E={cfg.network.edges}, "
              f"similarity from {source}")
        for name in HEURISTICS:
            policies = make_policies(name, cap, trace, cfg.network.edges, 0)
            wall, cpu = time.perf_counter(), time.process_time()
            simulate(trace, policies, table, model, u, tcfg.requests_per_episode, True, True)
            rate = len(trace) / (time.process_time() - cpu)
            wall_rate = len(trace) / (time.perf_counter() - wall)
            ok &= rate >= TARGET
            print(f"  {name:8s} {rate:12,.0f} requests/s of CPU time ({wall_rate:,.0f}/s wall) "
                  f"{'ok' if rate >= TARGET else 'BELOW TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
