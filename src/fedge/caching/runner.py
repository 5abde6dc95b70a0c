"""One `fedge cache` run: every configured policy on one request stream, as a `RunResult` and a run folder.

Heuristic policies run in the plain-Python simulator, or (`runtime.heuristic_engine: env`) replay through the
multi-edge environment the learned agents train online in (the same metrics, bit for bit); learned policies train
there, each with its own ledger and transport (`runtime.transport`), so a federated policy's summary carries the
bytes its model exchanges moved. `run_cache` is what the command calls and what tests call; with `out` it writes the
run folder through `fedge.runfolder.RunFolder`: metrics.jsonl (one record per policy and episode), summary.json
and config.yaml (with the resolved config and the environment), plus cost_per_episode.png and hit_ratios.png. The
folder is written as every command's is (`fedge.runfolder.staging`): problems with `out` are found before the trace is
loaded, and a rerun into a folder that holds a run replaces it only once finished. An episode metric that is not a
finite number stops the run with `fedge.runfolder.Diverged` (FAILED in the folder).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from fedge.caching.agents import learned_policies
from fedge.caching.config import HEURISTICS, CacheConfig
from fedge.caching.env import EdgeCore, MultiEdgeCacheEnv, edge_cores
from fedge.caching.replay import heuristic_env, replay
from fedge.caching.report import compare_learned, plot_costs, plot_hits, print_summary, summarise_run
from fedge.caching.rng import acceptance_draws
from fedge.caching.similarity import SoftHitTable, item_embeddings
from fedge.caching.simulator import CostModel, make_policies, simulate
from fedge.caching.trace import build_trace
from fedge.caching.train import train_agents
from fedge.config import check, to_dict
from fedge.messaging.ledger import Ledger
from fedge.messaging.transport import make_transport
from fedge.output import non_finite, progress_bar
from fedge.runfolder import Diverged, RunFolder, RunResult, complete
from fedge.runfolder.staging import attempt

NO_SOFT = " (no soft hits)"


def check_policies(cfg: CacheConfig) -> None:
    """ConfigError unless every policy is a heuristic, a registered agent or its `fed-` variant."""
    choices = HEURISTICS + tuple(learned_policies())
    for name in cfg.policies:
        check(name in choices, f"policies: unknown policy {name!r} (choose from {', '.join(choices)})")


def _checked(label: str, episode: int, metrics: dict[str, Any]) -> None:
    """`Diverged` if an episode's metric is not a finite number."""
    where = non_finite(metrics)
    if where is not None:
        hint = "check the cost settings" if label.split(" ")[0] in HEURISTICS else "lower agent.lr"
        raise Diverged(f"{label}, episode {episode + 1}: {where} is {metrics.get(where, 'not finite')} — the run "
                       f"diverged; {hint}")


def run_cache(cfg: CacheConfig, out: Path | None = None, progress: bool = False,
              show: bool = True) -> RunResult:
    """Simulate/train every configured policy (and its no-soft-hit twin with `soft_ablation`). With `out`, write the
    run folder; with `show`, print the summary table. Returns the summary and the per-episode history."""
    check_policies(cfg)
    with attempt(out, "--out") if out is not None else nullcontext() as place:
        result, runs, title = _run(cfg, place.path if place is not None else None, progress)
    if show:
        print_summary(runs, title)
    return result


def _run(cfg: CacheConfig, out: Path | None, progress: bool) -> tuple[RunResult, dict[str, Any], str]:
    net, tr = cfg.network, cfg.trace
    trace = build_trace(tr, net.edges, cfg.seed)
    capacity = net.capacity_items(trace.num_items)
    emb, emb_source = item_embeddings(trace, tr.item_embeddings, tr.data_dir, tr.embedding_dim, tr.clusters, cfg.seed)
    table = SoftHitTable.build(emb, cfg.soft_hits)
    model = CostModel.from_config(cfg.cost, net)
    accept_u = acceptance_draws(cfg.seed, len(trace))
    episode_len = tr.requests_per_episode
    n_episodes = -(-len(trace) // episode_len)
    settings = [cfg.soft_hits.enabled] + ([False] if cfg.soft_ablation and cfg.soft_hits.enabled else [])
    runs: dict[str, dict[str, Any]] = {}
    speeds: dict[str, float] = {}
    history: list[dict[str, Any]] = []
    folder = RunFolder(out) if out is not None else None
    try:
        with progress_bar("fedge cache", len(settings) * len(cfg.policies) * n_episodes, progress) as advance:
            for soft in settings:
                for policy in cfg.policies:
                    label = policy if soft or len(settings) == 1 else f"{policy}{NO_SOFT}"

                    def log(episode: int, metrics: dict[str, Any], label: str = label, soft: bool = soft) -> None:
                        _checked(label, episode, metrics)
                        record = {"policy": label, "soft_hits": soft, **metrics}
                        history.append(record)
                        if folder is not None:
                            folder.log(record)
                        advance(1, status=f"{label} ep {episode + 1} cost {metrics['cost']:.3f}")

                    start = time.perf_counter()
                    def cores(soft: bool = soft) -> list[EdgeCore]:
                        return edge_cores(trace, capacity, emb, table, model, accept_u, episode_len, net.edges, soft,
                                          cfg.agent.short_window, cfg.agent.long_window)

                    def policies(policy: str = policy) -> list[Any]:
                        return make_policies(policy, capacity, trace, net.edges, cfg.seed,
                                             cfg.heuristics.decay_half_life)
                    if policy in HEURISTICS and cfg.runtime.heuristic_engine == "simulator":
                        episodes = simulate(trace, policies(), table, model, accept_u, episode_len, net.cooperation,
                                            soft, log)
                    elif policy in HEURISTICS:
                        episodes = replay(heuristic_env(cores, policies, net.cooperation), n_episodes, cfg.seed, log)
                    else:
                        env = MultiEdgeCacheEnv(cores, net.cooperation, observe="deciding")
                        transport = make_transport(cfg.runtime.transport, Ledger())
                        episodes = train_agents(env, policy, cfg.agent, n_episodes, cfg.seed, log, transport)
                    runs[label] = summarise_run(episodes)
                    runs[label]["seconds"] = time.perf_counter() - start
                    speeds[label] = len(trace) / runs[label]["seconds"]
    except Diverged as err:
        if folder is not None:
            folder.fail(str(err))
        raise
    finally:
        if folder is not None:
            folder.close()
    title = f"{trace.name} trace, E={net.edges}, C={capacity} of {trace.num_items} items"
    main_runs = {k: v for k, v in runs.items() if NO_SOFT not in k}
    summary: dict[str, Any] = {
        "policies": runs, "learned_vs_heuristics": compare_learned(main_runs), "requests_per_second": speeds,
        "capacity_items": capacity, "catalogue_items": trace.num_items, "requests": len(trace),
        "episodes": n_episodes, "embeddings": emb_source, "transport": cfg.runtime.transport,
        "heuristic_engine": cfg.runtime.heuristic_engine,
        "duplicates_removed": trace.duplicates_removed}
    if len(settings) == 2:
        summary["soft_hits_lower_cost"] = {p: runs[p]["cost"] < runs[f"{p}{NO_SOFT}"]["cost"] for p in cfg.policies}
    summary = complete(summary, to_dict(cfg))
    if out is not None and folder is not None:
        plot_costs(runs, out / "cost_per_episode.png", title)
        plot_hits(runs, out / "hit_ratios.png", title)
        folder.finish(summary)
    return RunResult(summary, history), runs, title


__all__ = ["run_cache"]
