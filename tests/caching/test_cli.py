"""`fedge cache` end to end: run folder contents, one-line errors for bad parameters, MovieLens soft-hit ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge import cli

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
    for name in ("cost_per_episode.png", "hit_ratios.png"):
        assert (out / name).stat().st_size > 1000
    assert "avg cost" in capsys.readouterr().out


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
