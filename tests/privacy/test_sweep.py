"""`fedge privacy-sweep`: a table and a plot of accuracy against ε, one run per (ε, seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.cli import main


def test_sweep_writes_table_plot_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    code = main(["privacy-sweep", "--algorithm", "fedavg", "--epsilons", "inf,50", "--seeds", "0,1", "--no-progress",
                 "--set", "rounds=2", "--set", "data.devices=4", "--set", "train.epochs=1",
                 "--set", "privacy.max_grad_norm=0.01", "--out", str(out)])
    assert code == 0
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert [(r["epsilon"], r["seed"]) for r in runs] == [(None, 0), (None, 1), (50.0, 0), (50.0, 1)]
    assert all(r["noise_multiplier"] is None for r in runs[:2]) and all(r["noise_multiplier"] > 0 for r in runs[2:])
    assert all(r["achieved_epsilon"] <= 50.0 + 0.5 for r in runs[2:])
    table = (out / "sweep.md").read_text()
    assert "∞ (no DP)" in table and "| 50 |" in table and (out / "accuracy_vs_epsilon.png").stat().st_size > 0
    assert "accuracy_mean" in capsys.readouterr().out


def test_bad_epsilons_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("0", "-1", "nan", "a,b"):
        code = main(["privacy-sweep", "--algorithm", "fedavg", "--epsilons", value, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "--epsilons" in err and len(err.splitlines()) == 1
