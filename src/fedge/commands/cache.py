"""Recommendation-enabled edge caching: simulate E edge caches with soft hits and compare replacement policies.

Heuristics (lru, lfu, fifo, random, static, belady, sim-lfu) run in a fast simulator; learned agents (sac, dqn and
their federated variants fed-sac, fed-dqn) learn online in the multi-edge environment. Writes metrics.jsonl (one
record per policy and episode), summary.json, cost_per_episode.png and hit_ratios.png to the run folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedge.caching.config import HEURISTICS, LEARNED, CacheConfig
from fedge.caching.env import MultiEdgeCacheEnv, edge_cores
from fedge.caching.report import compare_learned, plot_costs, plot_hits, print_summary, summarise_run
from fedge.caching.similarity import SoftHitTable, item_embeddings
from fedge.caching.simulator import CostModel, make_policies, simulate
from fedge.caching.trace import build_trace
from fedge.caching.train import train_agents
from fedge.config import apply_overrides, build, load_yaml, set_path, to_dict
from fedge.output import JsonlWriter, atomic_write_json, console, progress_bar

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
    parser.add_argument("--out", type=Path, help="run folder (default runs/cache-<trace>-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(args: argparse.Namespace) -> CacheConfig:
    """Defaults < --config YAML < shortcut flags < --set overrides."""
    mapping: dict[str, Any] = load_yaml(args.config) if args.config else {}
    shortcuts = {"trace.kind": args.trace, "network.edges": args.edges, "network.capacity": args.capacity,
                 "trace.episodes": args.episodes, "trace.data_dir": args.data_dir, "seed": args.seed,
                 "trace.item_embeddings": args.item_embeddings}
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


def run(cfg: CacheConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Simulate/train every configured policy (and its no-soft-hit twin with soft_ablation); write the report."""
    net, tr = cfg.network, cfg.trace
    trace = build_trace(tr, net.edges, cfg.seed)
    capacity = net.capacity_items(trace.num_items)
    emb, emb_source = item_embeddings(trace, tr.item_embeddings, tr.data_dir, tr.embedding_dim, tr.clusters, cfg.seed)
    table = SoftHitTable.build(emb, cfg.soft_hits)
    model = CostModel.from_config(cfg.cost, net)
    accept_u = np.random.default_rng([cfg.seed, 1]).random(len(trace))
    episode_len = tr.requests_per_episode
    n_episodes = -(-len(trace) // episode_len)
    settings = [cfg.soft_hits.enabled] + ([False] if cfg.soft_ablation and cfg.soft_hits.enabled else [])
    runs: dict[str, dict[str, Any]] = {}
    speeds: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(out / "metrics.jsonl") as writer, \
            progress_bar("fedge cache", len(settings) * len(cfg.policies) * n_episodes, progress) as advance:
        for soft in settings:
            for policy in cfg.policies:
                label = policy if soft or len(settings) == 1 else f"{policy} (no soft hits)"

                def log(episode: int, metrics: dict[str, float], label: str = label, soft: bool = soft) -> None:
                    writer.write({"policy": label, "soft_hits": soft, **metrics})
                    advance(1, status=f"{label} ep {episode + 1} cost {metrics['cost']:.3f}")

                start = time.perf_counter()
                if policy in HEURISTICS:
                    episodes = simulate(trace, make_policies(policy, capacity, trace, net.edges, cfg.seed), table,
                                        model, accept_u, episode_len, net.cooperation, soft, log)
                else:
                    def cores(soft: bool = soft) -> list:
                        return edge_cores(trace, capacity, emb, table, model, accept_u, episode_len, net.edges, soft,
                                          cfg.agent.short_window, cfg.agent.long_window)
                    env = MultiEdgeCacheEnv(cores, net.cooperation)
                    episodes = train_agents(env, policy, cfg.agent, n_episodes, cfg.seed, log)
                runs[label] = summarise_run(episodes)
                runs[label]["seconds"] = time.perf_counter() - start
                speeds[label] = len(trace) / runs[label]["seconds"]
    title = f"{trace.name} trace, E={net.edges}, C={capacity} of {trace.num_items} items"
    main_runs = {k: v for k, v in runs.items() if "(no soft hits)" not in k}
    plot_costs(runs, out / "cost_per_episode.png", title)
    plot_hits(runs, out / "hit_ratios.png", title)
    summary = {"policies": runs, "learned_vs_heuristics": compare_learned(main_runs),
               "requests_per_second": speeds, "capacity_items": capacity, "catalogue_items": trace.num_items,
               "requests": len(trace), "episodes": n_episodes, "embeddings": emb_source, "config": to_dict(cfg)}
    if len(settings) == 2:
        summary["soft_hits_lower_cost"] = {p: runs[p]["cost"] < runs[f"{p} (no soft hits)"]["cost"]
                                           for p in cfg.policies}
    atomic_write_json(out / "summary.json", summary)
    print_summary(runs, title)
    return summary


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    out = args.out or Path("runs") / f"cache-{cfg.trace.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run(cfg, out, progress=not args.no_progress)
    console.print(f"run folder: {out}")
    return 0
