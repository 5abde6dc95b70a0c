"""`fedge cache` end to end: run folder contents, one-line errors for bad parameters, MovieLens soft-hit ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedge import cli
from fedge.caching.config import CacheConfig
from fedge.caching.runner import run_cache
from fedge.config import build

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens" / "ml-latest-small"
TINY = ["--set", "trace.num_items=60", "--set", "trace.requests_per_episode=250", "--episodes", "2", "--edges", "2",
        "--no-progress"]


@pytest.fixture(autouse=True)
def only_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other subcommands are built by other modules; test this one in isolation."""
    monkeypatch.setattr(cli, "COMMANDS", {"cache": cli.COMMANDS["cache"]})


def test_run_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = cli.main(["cache", *TINY, "--capacity", "6", "--policy", "lru,sim-lfu,fed-dqn", "--soft-ablation",
                     "--set", "agent.warmup=16", "--set", "agent.batch_size=8", "--out", str(out)])
    assert code == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 3 * 2
    assert {x["policy"] for x in lines} >= {"lru", "fed-dqn", "lru (no soft hits)"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["capacity_items"] == 6 and summary["config"]["network"]["edges"] == 2
    assert set(summary["soft_hits_lower_cost"]) == {"lru", "sim-lfu", "fed-dqn"}
    assert "fed-dqn" in summary["learned_vs_heuristics"]
    fed = summary["policies"]["fed-dqn"]
    assert fed["bytes_total"] > 0 and fed["bytes_by_link"]["edge-cloud"] == fed["bytes_total"]
    assert "bytes_total" not in summary["policies"]["lru"]
    assert summary["environment"]["torch"] and summary["config"]["runtime"]["transport"] == "direct"
    assert yaml.safe_load((out / "config.yaml").read_text()) == summary["config"]
    for name in ("cost_per_episode.png", "hit_ratios.png"):
        assert (out / name).stat().st_size > 1000
    assert "avg cost" in capsys.readouterr().out


def test_run_cache_is_the_same_through_both_transports(tmp_path: Path) -> None:
    """Acceptance 4: `fedge cache`'s fed-dqn moves its traffic through the transport and ledger; loopback bytes give
    the same history (costs and bytes) as the direct path, and the command's files are what `run_cache` returns."""
    results = {}
    for name in ("direct", "loopback"):
        cfg = build(CacheConfig, {"policies": ["lru", "fed-dqn", "dqn"], "runtime": {"transport": name},
                                  "trace": {"num_items": 60, "requests_per_episode": 250, "episodes": 2},
                                  "network": {"edges": 2, "capacity": 6},
                                  "agent": {"warmup": 16, "batch_size": 8, "hidden": 8}})
        results[name] = run_cache(cfg, tmp_path / name, show=False)
    assert results["direct"].history == results["loopback"].history
    fed = [r for r in results["loopback"].history if r["policy"] == "fed-dqn"]
    assert fed[-1]["bytes_total"] == results["loopback"].summary["policies"]["fed-dqn"]["bytes_total"] > 0
    assert all(r["bytes_total"] == 0 for r in results["loopback"].history if r["policy"] == "dqn")
    written = [json.loads(x) for x in (tmp_path / "loopback" / "metrics.jsonl").read_text().splitlines()]
    assert written == json.loads(json.dumps(results["loopback"].history))


@pytest.mark.parametrize(("argv", "message"), [
    (["--capacity", "500"], "network.capacity: 500 items exceeds the catalogue size 60"),
    (["--set", "cost.w_sim=-1"], "cost.w_sim: must be >= 0, got -1.0"),
    (["--set", "cost.w_delay=-0.5"], "cost.w_delay: must be >= 0"),
    (["--policy", "lru,belady2"], "policies: unknown policy 'belady2'"),
    (["--trace", "movielens"], "movielens trace: no --data-dir given"),
    (["--set", "trace.bogus=1"], "unknown config key trace.bogus"),
])
def test_bad_parameters_give_one_line_error(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["cache", *TINY, *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.skipif(not (DATA / "ratings.csv").is_file(), reason="MovieLens ml-latest-small not present")
def test_soft_hits_lower_every_heuristic_cost_on_movielens(tmp_path: Path) -> None:
    out = tmp_path / "ml"
    code = cli.main(["cache", "--trace", "movielens", "--data-dir", str(DATA), "--policy", "heuristics",
                     "--episodes", "2", "--set", "trace.requests_per_episode=10000", "--soft-ablation",
                     "--no-progress", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embeddings"] == "genres"
    assert summary["soft_hits_lower_cost"] and all(summary["soft_hits_lower_cost"].values())
    assert summary["requests_per_second"]["lru"] > 0
