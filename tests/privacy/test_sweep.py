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


def test_a_diverged_run_is_recorded_not_averaged(tmp_path: Path) -> None:
    """A (ε, seed) whose run diverges keeps the sweep going and shows as diverged; it contributes no number."""
    from types import SimpleNamespace

    from fedge.reproduce.privacy_sweep import run_sweep, write
    from fedge.runfolder import Diverged

    config = SimpleNamespace(seed=0, privacy=SimpleNamespace(mechanism="none", calibrate=False, target_epsilon=None))

    def run_one(variant: SimpleNamespace) -> dict[str, object]:
        if variant.privacy.target_epsilon == 1.0 and variant.seed == 1:
            raise Diverged("round 3: the training loss is nan — the model diverged")
        return {"accuracy_mean": 0.5 + variant.seed / 10, "privacy": {"epsilon": 0.9, "noise_multiplier": 2.0}}

    runs = run_sweep(config, [float("inf"), 1.0], [0, 1], "user", run_one, "accuracy_mean")
    assert [r.diverged is not None for r in runs] == [False, False, False, True]
    assert runs[3].quality is None and "round 3" in (runs[3].diverged or "")
    table = write(tmp_path, runs, "accuracy_mean", "t", "fedge privacy-sweep")
    row = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    assert "0.5000 ± 0.0000 (1 of 2 diverged)" in row
    assert "True" in (tmp_path / "sweep.csv").read_text().splitlines()[-1]


def test_combine_draws_finished_sweeps_and_refuses_others(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from fedge.reproduce.privacy_sweep import SweepRun, write

    for name, quality in (("a", 0.5), ("b", 0.7)):
        write(tmp_path / name, [SweepRun(float("inf"), 0, quality + 0.2, None, None, 1.0),
                                SweepRun(8.0, 0, quality, 7.9, 2.0, 1.0), SweepRun(8.0, 1, None, None, None, 0.0, "x")],
              "accuracy_mean", f"sweep {name}", "fedge privacy-sweep")
    png = tmp_path / "both.png"
    assert main(["privacy-sweep", "--combine", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["privacy-sweep", "--combine", str(tmp_path / "a"), str(tmp_path / "none"), "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--combine" in err and "none" in err and len(err.splitlines()) == 1
