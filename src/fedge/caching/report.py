"""Run report for `fedge cache`: per-policy summary, PNG plots and the Rich table.

Plots: `cost_per_episode.png` (average system cost per request against episode, one line per policy) and
`hit_ratios.png` (stacked bars of direct and soft hit ratio per policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedge.caching.config import HEURISTICS  # noqa: E402
from fedge.output import print_table  # noqa: E402

ONLINE_HEURISTICS = ("lru", "lfu", "fifo", "random", "sim-lfu", "dlfu")  # no future knowledge (unlike static, belady)
KEYS = ("cost", "delay_ms", "direct_hit_ratio", "soft_hit_ratio", "neighbour_ratio", "cloud_ratio")


def summarise_run(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Request-weighted averages over all episodes, total backhaul, the per-episode cost curve and, for learned
    policies, the bytes their agents' messages moved (`bytes_total`, `bytes_by_link`: the ledger at the end)."""
    n = sum(e["requests"] for e in episodes)
    out: dict[str, Any] = {k: sum(e[k] * e["requests"] for e in episodes) / max(n, 1) for k in KEYS}
    out["requests"] = n
    out["backhaul_mb"] = sum(e["backhaul_mb"] for e in episodes)
    out["cost_per_episode"] = [e["cost"] for e in episodes]
    if episodes and "bytes_total" in episodes[-1]:
        out["bytes_total"] = episodes[-1]["bytes_total"]
        out["bytes_by_link"] = dict(episodes[-1]["bytes_by_link"])
    return out


def compare_learned(runs: dict[str, dict[str, Any]], last: int = 3) -> dict[str, Any]:
    """Every policy by one measure, its own mean cost over the last `last` episodes (`final_cost`: what a learned
    policy pays once trained, what a heuristic pays on the same stretch of the trace). The best online heuristic is
    the one with the lowest final cost; for each learned policy: its final cost, whether it is below the best
    heuristic's, and the first episode (1-based) at which its cost, and its running mean over `last` episodes, is
    at or below that level."""
    heur = {p: r for p, r in runs.items() if p in ONLINE_HEURISTICS}
    learned = {p: r for p, r in runs.items() if p not in HEURISTICS}
    if not heur or not learned:
        return {}
    finals = {p: _tail(r["cost_per_episode"], last) for p, r in heur.items()}
    best = min(finals, key=lambda p: finals[p])
    level = finals[best]
    out: dict[str, Any] = {"measure": f"mean cost over the last {last} episodes", "best_online_heuristic": best,
                           "best_heuristic_final_cost": level, "heuristic_final_costs": finals}
    for p, r in learned.items():
        curve = r["cost_per_episode"]
        reach = next((i + 1 for i, c in enumerate(curve) if c <= level), None)
        smooth = next((i + 1 for i in range(len(curve)) if _tail(curve[: i + 1], last) <= level), None)
        out[p] = {"episodes_to_reach_best_heuristic": reach, "episodes_to_reach_smoothed": smooth,
                  "final_cost": _tail(curve, last), "beats_best_heuristic_at_end": _tail(curve, last) < level}
    return out


def _tail(values: list[float], last: int) -> float:
    tail = values[-last:]
    return sum(tail) / len(tail)


def plot_costs(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in runs.items():
        curve = r["cost_per_episode"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name,
                linestyle="--" if name in HEURISTICS else "-")
    ax.set_xlabel("episode")
    ax.set_ylabel("average system cost per request (cost units)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_hits(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    names = list(runs)
    direct = [runs[n]["direct_hit_ratio"] * 100 for n in names]
    soft = [runs[n]["soft_hit_ratio"] * 100 for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names)), 4.2))
    ax.bar(names, direct, label="direct hits")
    ax.bar(names, soft, bottom=direct, label="soft hits (accepted recommendation)")
    ax.set_xlabel("policy")
    ax.set_ylabel("share of requests (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_summary(runs: dict[str, dict[str, Any]], title: str) -> None:
    """The Rich table; "model traffic" is what the learned agents' messages moved (— for heuristics)."""
    rows = [[name, r["cost"], r["delay_ms"], r["direct_hit_ratio"], r["soft_hit_ratio"], r["backhaul_mb"],
             r["bytes_total"] / 1e6 if "bytes_total" in r else "—"] for name, r in runs.items()]
    print_table(title, ["policy", "avg cost", "avg delay (ms)", "direct hit ratio", "soft hit ratio", "backhaul (MB)",
                        "model traffic (MB)"], rows)
