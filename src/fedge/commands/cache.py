"""Recommendation-enabled edge caching: simulate E edge caches with soft hits and compare replacement policies.

Heuristics (lru, lfu, fifo, random, static, belady, sim-lfu) run in a fast simulator; learned agents (sac, dqn and
their federated variants fed-sac, fed-dqn) learn online in the multi-edge environment; federated agents exchange
their models through a transport (`--transport direct|loopback`) whose ledger counts every byte. Writes
metrics.jsonl (one record per policy and episode), summary.json, config.yaml, cost_per_episode.png and
hit_ratios.png to the run folder (`fedge.caching.runner.run_cache`); a rerun into a folder that holds a run replaces
it only once it has finished (`fedge.runfolder.staging`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fedge.caching.config import HEURISTICS, LEARNED, CacheConfig
from fedge.caching.runner import run_cache
from fedge.config import apply_overrides, build, load_yaml, set_path
from fedge.output import console

ALIASES = {"heuristics": list(HEURISTICS), "learned": list(LEARNED), "all": list(HEURISTICS + LEARNED)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (see configs/cache-*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set cost.w_sim=2 (repeatable)")
    parser.add_argument("--trace", choices=["movielens", "synthetic"], help="request trace")
    parser.add_argument("--policy", help="comma-separated policies, or heuristics / learned / all")
    parser.add_argument("--edges", type=int, help="number of edge servers E")
    parser.add_argument("--capacity", type=float, help="cache size: fraction of the catalogue (<1) or items (>=1)")
    parser.add_argument("--episodes", type=int, help="number of episodes")
    parser.add_argument("--data-dir", type=Path, help="folder with ml-latest-small ratings.csv and movies.csv")
    parser.add_argument("--item-embeddings", type=Path, help="recommender's item embeddings (.pt/.npy/.npz)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--no-soft-hits", action="store_true", help="disable recommendation (soft hits)")
    parser.add_argument("--soft-ablation", action="store_true", help="also run every policy without soft hits")
    parser.add_argument("--transport", choices=["direct", "loopback"],
                        help="how federated agents' messages travel (runtime.transport)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/cache-<trace>-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(args: argparse.Namespace) -> CacheConfig:
    """Defaults < --config YAML < shortcut flags < --set overrides."""
    mapping: dict[str, Any] = load_yaml(args.config) if args.config else {}
    shortcuts = {"trace.kind": args.trace, "network.edges": args.edges, "network.capacity": args.capacity,
                 "trace.episodes": args.episodes, "trace.data_dir": args.data_dir, "seed": args.seed,
                 "trace.item_embeddings": args.item_embeddings, "runtime.transport": args.transport}
    for key, value in shortcuts.items():
        if value is not None:
            set_path(mapping, key, str(value) if isinstance(value, Path) else value)
    if args.policy:
        names = [p.strip() for p in args.policy.split(",") if p.strip()]
        mapping["policies"] = [q for p in names for q in ALIASES.get(p, [p])]
    if args.no_soft_hits:
        set_path(mapping, "soft_hits.enabled", False)
    if args.soft_ablation:
        mapping["soft_ablation"] = True
    return build(CacheConfig, apply_overrides(mapping, args.overrides))


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    out = args.out or Path("runs") / f"cache-{cfg.trace.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_cache(cfg, out, progress=not args.no_progress)
    console.print(f"run folder: {out}")
    return 0
