"""Learned caching agents against the heuristics, like for like, over several seeds (issue 17, caching).

Every policy runs on the same trace through one engine: the heuristics replay through the multi-edge environment the
agents learn in (`runtime.heuristic_engine: env`), and with `--check-engines` also through the fast simulator, whose
metrics must be identical. Every policy is scored by one measure, its own mean cost over the last `--last` episodes
(for the agents: once trained; for the heuristics: on the same stretch of the trace); the best online heuristic is
the one with the lowest mean of that measure over the seeds. Reported seeds must differ from the seeds anything was
tuned on: the agents' settings were chosen on seed 0, `--tune-half-life` chooses dlfu's half-life on `--seeds`.

Usage:
  python -m benchmarks.cache_compare --tune-half-life 125,250,500,1000,2000,4000 --seeds 0,100,101
  python -m benchmarks.cache_compare --seeds 1,2,3,4,5 --check-engines --out benchmarks/results/cache-compare.json
  python -m benchmarks.cache_compare --merge part1.json part2.json --out all.json  (seeds run in separate processes)
Writes a JSON file (per seed and policy: average cost, last-episodes cost, curve, seconds; mean ± sd over seeds,
paired differences to the best heuristic, the environment) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from fedge.caching.config import HEURISTICS, CacheConfig
from fedge.caching.report import ONLINE_HEURISTICS
from fedge.caching.runner import run_cache
from fedge.config import apply_overrides, build, load_yaml, to_dict
from fedge.runfolder import environment

POLICIES = ["lru", "lfu", "fifo", "random", "sim-lfu", "dlfu", "static", "belady", "dqn", "fed-dqn", "sac", "fed-sac"]


def _config(path: Path, seed: int, policies: list[str], overrides: list[str], engine: str) -> CacheConfig:
    mapping = load_yaml(path)
    mapping.update({"seed": seed, "policies": policies})
    mapping.setdefault("runtime", {})["heuristic_engine"] = engine
    return build(CacheConfig, apply_overrides(mapping, overrides))


def _tail(curve: list[float], last: int) -> float:
    return sum(curve[-last:]) / len(curve[-last:])


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_seed(args: argparse.Namespace, seed: int, policies: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    result = run_cache(_config(args.config, seed, policies, args.set, "env"), None, show=False).summary
    out = {p: {"avg_cost": r["cost"], "final_cost": _tail(r["cost_per_episode"], args.last),
               "cost_per_episode": r["cost_per_episode"], "seconds": r["seconds"]}
           for p, r in result["policies"].items()}
    heuristics = [p for p in policies if p in HEURISTICS]
    if args.check_engines and heuristics:
        sim = run_cache(_config(args.config, seed, heuristics, args.set, "simulator"), None, show=False).summary
        for p in heuristics:
            a = {k: v for k, v in sim["policies"][p].items() if k != "seconds"}
            b = {k: v for k, v in result["policies"][p].items() if k != "seconds"}
            if a != b:
                raise SystemExit(f"seed {seed}, {p}: the simulator and the environment disagree")
        out["engines_identical"] = True
    print(f"seed {seed}: {time.perf_counter() - start:.0f} s; "
          + ", ".join(f"{p} {v['final_cost']:.3f}" for p, v in out.items() if isinstance(v, dict)), flush=True)
    return {"seed": seed, "policies": out, "config": result["config"]}


def aggregate(seeds: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    table = {p: {"final_cost": _stats([s["policies"][p]["final_cost"] for s in seeds]),
                 "avg_cost": _stats([s["policies"][p]["avg_cost"] for s in seeds])} for p in policies}
    online = [p for p in policies if p in ONLINE_HEURISTICS]
    if not online:
        return {"policies": table}
    best = min(online, key=lambda p: table[p]["final_cost"]["mean"])
    paired = {}
    for p in policies:
        if p in HEURISTICS and p != best and p not in ONLINE_HEURISTICS:
            continue
        diffs = [s["policies"][p]["final_cost"] - s["policies"][best]["final_cost"] for s in seeds]
        paired[p] = {**_stats(diffs), "below_on_seeds": sum(d < 0 for d in diffs), "seeds": len(diffs)}
    return {"policies": table, "best_online_heuristic": best, "paired_vs_best": paired}


def markdown(agg: dict[str, Any], n: int, last: int) -> str:
    best = agg.get("best_online_heuristic")
    lines = [f"| policy | last-{last} cost, mean ± sd ({n} seeds) | avg cost, mean ± sd | last-{last} − {best} "
             "(paired) | below on |", "|---|---|---|---|---|"]
    for p, r in agg["policies"].items():
        f, a = r["final_cost"], r["avg_cost"]
        d = agg.get("paired_vs_best", {}).get(p)
        diff = f"{d['mean']:+.3f} ± {d['sd']:.3f}" if d and p != best else "—"
        below = f"{d['below_on_seeds']}/{d['seeds']}" if d and p != best else "—"
        lines.append(f"| {p} | {f['mean']:.3f} ± {f['sd']:.3f} | {a['mean']:.3f} ± {a['sd']:.3f} | {diff} | {below} |")
    return "\n".join(lines)


def tune_half_life(args: argparse.Namespace) -> dict[str, Any]:
    """dlfu's half-life by its mean last-episodes cost over `--seeds` (tuning seeds, not to be reported)."""
    scores = {}
    for h in [int(v) for v in args.tune_half_life.split(",")]:
        finals = []
        for seed in args.seeds:
            cfg = _config(args.config, seed, ["dlfu"], [*args.set, f"heuristics.decay_half_life={h}"], "simulator")
            curve = run_cache(cfg, None, show=False).summary["policies"]["dlfu"]["cost_per_episode"]
            finals.append(_tail(curve, args.last))
        scores[h] = _stats(finals)
        print(f"half-life {h}: last-{args.last} cost {scores[h]['mean']:.4f} ± {scores[h]['sd']:.4f}", flush=True)
    best = min(scores, key=lambda h: scores[h]["mean"])
    print(f"chosen half-life: {best}")
    return {"tuning_seeds": args.seeds, "half_life": {str(h): v for h, v in scores.items()}, "chosen": best}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/cache-drift.yaml"))
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 3, 4, 5])
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--last", type=int, default=3, help="episodes in the last-episodes cost")
    parser.add_argument("--check-engines", action="store_true", help="also run the heuristics in the simulator")
    parser.add_argument("--tune-half-life", help="comma list of dlfu half-lives to choose from on --seeds")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the seeds of these result files")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        seeds = [s for part in parts for s in part["seeds"]]
        policies = list(seeds[0]["policies"])
        policies = [p for p in policies if p != "engines_identical"]
        report = {"seeds": seeds, **aggregate(seeds, policies), "last": parts[0]["last"],
                  "parts": [part["command"] for part in parts]}
        print(markdown(report, len(seeds), report["last"]))
    elif args.tune_half_life:
        report: dict[str, Any] = tune_half_life(args)
    else:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        seeds = [run_seed(args, seed, policies) for seed in args.seeds]
        report = {"seeds": seeds, **aggregate(seeds, policies), "last": args.last}
        print(markdown(report, len(seeds), args.last))
    report.update({"command": "python -m benchmarks.cache_compare " + " ".join(_argv()), "environment": environment(),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "base_config": to_dict(_config(args.config, 0, ["lru"], args.set, "env"))})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    raise SystemExit(main())
