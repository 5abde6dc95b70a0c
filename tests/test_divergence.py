"""Divergence is an error, not a number: a non-finite loss, parameter or score stops `fedge run`, `fedge recsys` and
`fedge cache` with one line naming the round and the setting to lower (exit 2) and FAILED in the run folder; every
JSON file is strict (no NaN/Infinity tokens), values without a number are null."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedge import cli
from fedge.caching.runner import _checked
from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.output import atomic_write_json, dumps
from fedge.runfolder import FAILED, Diverged
from fedge.runtimes.simulator import simulate

TINY_RECSYS = ["--no-progress", "--set", "data.eval_negatives=20", "--set", "model.dim=4"]


def strict_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed strictly (NaN, Infinity and -Infinity are refused)."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path}: non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture
def ratings_dir(tmp_path: Path) -> Path:
    """A tiny ml-latest-small ratings.csv: 12 users, 6-10 ratings each."""
    gen = torch.Generator().manual_seed(0)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(12):
        items = torch.randperm(40, generator=gen)[: 6 + user % 5].tolist()
        rows += [f"{user + 1},{item + 100},{1 + (user + item) % 5},{1000 * user + t}" for t, item in enumerate(items)]
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def _assert_diverged(code: int, err: str, out: Path, needles: tuple[str, ...], metrics: str = "metrics.jsonl") -> None:
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert "diverged" in lines[-1] and all(n in lines[-1] for n in needles), lines[-1]
    assert lines[-1].split("error: ", 1)[1] == (out / FAILED).read_text().strip()
    assert not (out / "summary.json").exists()
    strict_lines(out / metrics)


def test_diverged_recommender_is_an_error_not_a_perfect_score(ratings_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18, defect 1: sgd at lr=100 gave HR@10 = NDCG@10 = 1.0 and exit 0."""
    out = tmp_path / "fedmf"
    code = cli.main(["recsys", "--data-dir", str(ratings_dir), "--rounds", "6", "--set", "train.local_optimizer=sgd",
                     "--set", "train.lr=100", "--out", str(out), *TINY_RECSYS])
    _assert_diverged(code, capsys.readouterr().err, out, ("round ", "train.lr"))
    records = strict_lines(out / "metrics.jsonl")
    assert not [r for r in records if 1.0 in (r.get("val_hr@10"), r.get("test_hr@10"))]


def test_fedmeta_with_a_huge_inner_rate_is_an_error(ratings_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fedmeta"
    code = cli.main(["recsys", "--data-dir", str(ratings_dir), "--rounds", "3", "--algorithm", "fedmeta", "--set",
                     "meta.inner_lr=1e6", "--set", "eval_every=1", "--out", str(out), *TINY_RECSYS])
    _assert_diverged(code, capsys.readouterr().err, out, ("round 1", "meta.inner_lr"))


def test_diverged_fedge_run_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = cli.main(["run", "--devices", "4", "--rounds", "3", "--set", "train.epochs=1", "--set", "train.lr=1e4",
                     "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    _assert_diverged(code, err, out, ("dpmn round 1", "train.lr"), "dpmn/metrics.jsonl")
    assert (out / "dpmn" / FAILED).read_text() == (out / FAILED).read_text()
    assert not (out / "comparison.json").exists() and not (out / "dfl").exists()


def test_cache_metric_that_is_not_finite_is_a_divergence() -> None:
    _checked("fed-dqn", 0, {"cost": 1.0, "delay_ms": 2.0})
    with pytest.raises(Diverged, match="fed-dqn, episode 3: cost is nan .* lower agent.lr"):
        _checked("fed-dqn", 2, {"cost": math.nan})
    with pytest.raises(Diverged, match="lru, episode 1: delay_ms is inf .* check the cost settings"):
        _checked("lru", 0, {"cost": 1.0, "delay_ms": math.inf})


def test_json_is_strict(tmp_path: Path) -> None:
    assert dumps({"a": 1.5, "b": None}) == '{"a": 1.5, "b": null}'
    with pytest.raises(ValueError, match=r"b\.c\[1\] is not a finite number"):
        dumps({"a": 1.0, "b": {"c": [0.0, math.inf]}})
    with pytest.raises(ValueError, match="loss is not a finite number"):
        atomic_write_json(tmp_path / "x.json", {"loss": math.nan})
    assert list(tmp_path.iterdir()) == []  # no file, no temporary


def test_rounds_without_participants_or_members_write_null(tmp_path: Path) -> None:
    """A round in which every device failed has no loss and no accuracy: null, not NaN and not 0."""
    config = build(ExperimentConfig, {"rounds": 4, "data": {"devices": 4}, "train": {"epochs": 1},
                                      "algorithms": ["fedavg"], "faults": {"device_failure": 0.9}})
    result = simulate(config, "fedavg", tmp_path / "fedavg")
    records = strict_lines(tmp_path / "fedavg" / "metrics.jsonl")
    assert records == json.loads(dumps(result.history))
    idle = [r for r in records if r["participants"] == 0]
    assert idle, "the seed gives no round without participants; pick another"
    assert all(r["loss_mean"] is None for r in idle)
    assert all(r["accuracy_p10"] is None and r["accuracy_mean"] is None for r in records if r.get("members") == 0)
    json.loads((tmp_path / "fedavg" / "summary.json").read_text(), parse_constant=pytest.fail)
