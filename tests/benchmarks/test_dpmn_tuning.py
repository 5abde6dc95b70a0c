"""benchmarks.dpmn_tuning chooses on validation only: the test accuracies it records never change its choice."""

from __future__ import annotations

import random
from typing import Any

import pytest

from benchmarks import dpmn_tuning


def _fake_runs(monkeypatch: pytest.MonkeyPatch, test_seed: int) -> None:
    """`run` replaced: validation a fixed function of the setting and seed, test random under `test_seed`."""
    rng = random.Random(test_seed)

    def run(algorithm: str, seed: int, setting: dict[str, float], rounds: int, late: int,
            setups: dict[int, Any]) -> dict[str, Any]:
        val = 0.9 - abs(setting["lam"] - 0.5) / 10 - abs(setting["sigma"] - 1e-2) + setting["delta"] / 100 + seed / 1e4
        test = rng.random()
        return {"algorithm": algorithm, "seed": seed, **setting, "val_late": val, "val_final": val,
                "test_late": test, "test_final": test}
    monkeypatch.setattr(dpmn_tuning, "run", run)


def _tuned(monkeypatch: pytest.MonkeyPatch, test_seed: int) -> dict[str, Any]:
    _fake_runs(monkeypatch, test_seed)
    return dpmn_tuning.tune([100, 101], 30, 5, [0.05, 0.2, 0.5, 1.0], [1e-4, 1e-3, 1e-2], [0.1, 0.2, 0.3])


def test_choice_reads_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = {_tuple(_tuned(monkeypatch, s)["chosen"]) for s in range(5)}  # five different test draws
    assert chosen == {(0.5, 1e-2, 0.3)}


def _tuple(setting: dict[str, float]) -> tuple[float, float, float]:
    return setting["lam"], setting["sigma"], setting["delta"]


def test_ties_go_to_the_shipped_default_then_grid_order() -> None:
    default = dpmn_tuning.DEFAULT
    other_lam, far_lam = default["lam"] + 0.5, default["lam"] + 1.0
    grid = [{**default, "lam": other_lam, "score": 0.9}, {**default, "score": 0.9}, {**default, "lam": far_lam,
                                                                                      "score": 0.8}]
    assert dpmn_tuning.choose(grid)["lam"] == default["lam"]
    assert dpmn_tuning.choose([grid[0], grid[2]])["lam"] == other_lam
    grid[0]["score"] += 1e-12  # float noise is no win
    assert dpmn_tuning.choose(grid)["lam"] == default["lam"]
    # the δ stage: neither candidate is the shipped setting; the tie goes to the one keeping the shipped δ
    deltas = [{**default, "lam": other_lam, "delta": default["delta"] + 0.1, "score": 0.9},
              {**default, "lam": other_lam, "score": 0.9}]
    assert dpmn_tuning.choose(deltas)["delta"] == default["delta"]
    # nothing shipped in either: grid order
    far = [{"lam": far_lam, "sigma": 1.0, "delta": 1.0, "score": 0.9}, {"lam": other_lam, "sigma": 1.0,
                                                                          "delta": 1.0, "score": 0.9}]
    assert dpmn_tuning.choose(far)["lam"] == far_lam


def test_verdict_needs_agreeing_seeds_and_a_mean_beyond_the_spread() -> None:
    assert dpmn_tuning.verdict([1.0, 1.2, 0.9]) == "established"
    assert dpmn_tuning.verdict([1.0, -0.5, 2.0]) == "not established"
    assert dpmn_tuning.verdict([0.1, 3.0, 0.2]) == "not established"  # same sign, mean 1.1 < sd 1.7


def test_reused_runs_are_not_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    setting = {"lam": 0.3, "sigma": 1e-3, "delta": 0.2}
    saved = {"algorithm": "dpmn", "seed": 7, **setting, "rounds": 4, "val": [0.1, 0.2, 0.3, 0.5],
             "test": [0.0, 0.0, 0.4, 0.6]}
    monkeypatch.setitem(dpmn_tuning.REUSED, dpmn_tuning._key("dpmn", 7, setting, 4), saved)
    monkeypatch.setattr(dpmn_tuning, "simulate", None)  # would fail if called
    out = dpmn_tuning.run("dpmn", 7, setting, 4, 2, {})
    assert out["reused"] and out["val_late"] == pytest.approx(0.4) and out["test_late"] == pytest.approx(0.5)
