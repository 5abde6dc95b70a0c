"""Issue 17's studies in `fedge reproduce`: the cells each study adds, the decomposition and equal-bytes arithmetic
on made-up records, the verdicts against local training, the report's sections and figures end to end on a tiny
grid, and one-line errors for bad study flags."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedge.cli import main
from fedge.config import build
from fedge.reproduce.analysis import (
    ABOVE,
    BELOW,
    OPEN,
    accuracy_at,
    decompose,
    equal_bytes,
    local_verdict,
    sweep,
    where_beats_local,
)
from fedge.reproduce.grid import GridSpec, build_cells
from fedge.reproduce.report_studies import render_studies
from fedge.reproduce.results import Record


def rec(algorithm: str, accuracy: float, mb: float, seed: int = 0, studies: tuple[str, ...] = ("main",),
        density: float = 0.5, cap: int = 0, partition: str = "shards:2", rounds: int = 4) -> Record:
    """A record whose curve sends mb/rounds MB per round and climbs linearly to `accuracy`."""
    curve = [(r, accuracy * r / rounds, mb * 1e6 * r / rounds) for r in range(1, rounds + 1)]
    return Record(algorithm=algorithm, devices=20, delta=0.2, seed=seed, accuracy=accuracy, bytes_total=mb * 1e6,
                  studies=list(studies), rounds=rounds, partition=partition, curve=curve, target_density=density,
                  train_per_device=cap, train_samples=float(cap or 57), classes=2.0,
                  key=f"{algorithm}-{seed}-{density}-{cap}-{partition}")


def test_default_grid_is_unchanged_and_extra_studies_add_their_cells() -> None:
    assert len(build_cells(build(GridSpec, {"quick": True}))[1]) == 42  # the paper's three studies only
    spec = build(GridSpec, {"quick": True, "seeds": 1, "studies": ["extra"]})
    _, cells = build_cells(spec)
    tags = {(c.algorithm, c.target_density, c.train_per_device, c.partition): sorted(c.studies) for c in cells}
    # main 7; decompose adds dense DPMN; density adds 0.25 (0.5 and 1 shared); scarcity dpmn/local × 8, 16, 32;
    # skew dpmn/local × shards:5, dirichlet:0.1, dirichlet:1 — the main setting is shared by every study.
    assert len(cells) == 7 + 1 + 1 + 2 * 3 + 2 * 3
    assert tags[("dpmn", 0.5, 0, "shards:2")] == ["decompose", "density", "main", "scarcity", "skew"]
    assert tags[("dpmn", 1.0, 0, "shards:2")] == ["decompose", "density"]
    assert tags[("dfl", 0.5, 0, "shards:2")] == ["decompose", "density", "main"]
    assert tags[("local", 0.5, 8, "shards:2")] == ["scarcity"]
    assert tags[("dpmn", 0.5, 0, "dirichlet:0.1")] == ["skew"]
    assert {c.devices for c in cells} == {20} and all(c.delta == 0.2 for c in cells)
    only = build(GridSpec, {"seeds": 1, "studies": ["scarcity"], "train_per_device": [5],
                            "sweep_algorithms": ["dfl"], "algorithms": ["dpmn"]})
    assert sorted((c.algorithm, c.train_per_device) for c in build_cells(only)[1]) == [
        ("dfl", 0), ("dfl", 5), ("dpmn", 0), ("local", 0), ("local", 5)]


def test_decomposition_arithmetic() -> None:
    records = []
    for seed, (dfl, dense, dpmp, dpmn) in enumerate([(100, 40, 60, 20), (100, 50, 50, 25)]):
        records += [rec("dfl", 0.6, dfl, seed, ("main", "decompose")),
                    rec("dpmn", 0.9, dense, seed, ("decompose",), density=1.0),
                    rec("dpmp", 0.8, dpmp, seed, ("main", "decompose")),
                    rec("dpmn", 0.9, dpmn, seed, ("main", "decompose"))]
    parts = decompose(records, base_density=0.5)
    assert parts is not None and parts.seeds == [0, 1]
    assert parts.total == pytest.approx([0.8, 0.75])
    assert parts.pruning == pytest.approx([0.5, 0.5])
    assert parts.neighbours == pytest.approx([0.6, 0.5])
    for t, p, n in zip(parts.total, parts.pruning, parts.neighbours):
        assert 1 - t == pytest.approx((1 - p) * (1 - n))  # the parts multiply back to the whole
    assert parts.pruning_share == pytest.approx([math.log(0.5) / math.log(0.2), math.log(0.5) / math.log(0.25)])
    assert parts.dpmp_pruning == pytest.approx([0.4, 0.5])
    assert parts.dpmp_selection == pytest.approx([1 - 20 / 60, 0.5])
    assert decompose([r for r in records if r.target_density != 1.0], 0.5) is None  # no dense DPMN: no split


def test_accuracy_at_equal_bytes() -> None:
    dpmn = rec("dpmn", 0.9, 40)  # 10 MB a round, 4 rounds
    dfl = rec("dfl", 0.6, 80)  # 20 MB a round
    assert accuracy_at(dfl, 40e6) == (2, pytest.approx(0.3))
    assert accuracy_at(dfl, 39e6) == (1, pytest.approx(0.15))
    assert accuracy_at(dfl, 10e6) is None
    (row,) = equal_bytes([dpmn, dfl, rec("local", 0.95, 0)])  # local sends nothing: no row
    assert row.algorithm == "dpmn" and row.budget_mb == [40] and row.rounds == [4] and row.reference_rounds == [2]
    assert row.differences == [pytest.approx(0.9 - 0.3)]


def test_verdicts_against_local() -> None:
    assert local_verdict([3.0, 2.0, 4.0]) == ABOVE
    assert local_verdict([-3.0, -2.0]) == BELOW
    assert local_verdict([3.0, -1.0, 1.0]) == OPEN  # mean 1 within sd 2
    assert local_verdict([5.0]).startswith(OPEN)
    records = [rec(a, acc, 1, s, ("scarcity",), cap=cap)
               for s in (0, 1) for cap, accs in ((8, {"dpmn": 0.7 + 0.01 * s, "local": 0.6}),
                                                 (0, {"dpmn": 0.9, "local": 0.95 - 0.01 * s}))
               for a, acc in accs.items()]
    points = sweep(records, "scarcity")
    assert [p.label for p in points] == ["8", "all (~57)"]  # capped counts first, then all samples
    assert points[0].versus_local["dpmn"] == pytest.approx([10.0, 11.0])
    assert where_beats_local({"scarcity": points}) == ["scarcity: 8"]
    skew = sweep([rec("local", 0.5, 0, studies=("skew",), partition=p)
                  for p in ("dirichlet:1", "shards:5", "dirichlet:0.1", "shards:2")], "skew")
    assert [p.label for p in skew] == ["shards:2", "shards:5", "dirichlet:0.1", "dirichlet:1"]
    text = "\n".join(render_studies(records + [rec("dpmn", 0.9, 1, s) for s in (0, 1)]
                                    + [rec("local", 0.95 - 0.01 * s, 0, s) for s in (0, 1)], 0.5, None, "t"))
    assert "## Against local training (main setting)" in text and "## Data scarcity" in text
    assert "DPMN was more accurate than local training, outside the seed spread, at: scarcity: 8." in text
    assert "![" not in text  # no folder: no figures


TINY = ["--rounds", "2", "--seeds", "2", "--set", "data.devices=4", "--set", "train.epochs=1", "--algorithms",
        "dpmn,dfl,local", "--studies", "extra", "--densities", "0.5,1", "--train-per-device", "8", "--partitions",
        "dirichlet:1", "--sweep-algorithms", "dpmn", "--workers", "1", "--no-progress"]
STUDY_FIGURES = ["byte_decomposition.png", "density_sweep.png", "scarcity_sweep.png", "skew_sweep.png"]


def test_studies_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "R"
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    # per seed: main dpmn, dfl, local; decompose dpmp, dense dpmn; scarcity dpmn/local at 8; skew dpmn/local
    assert "18 cell(s) computed, 0 reused" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    for section in ("## Against local training (main setting)", "## DPMN's byte saving decomposed",
                    "## Accuracy at equal bytes", "## Density sweep", "## Data scarcity", "## Label skew",
                    "## Where does DPMN beat local training?", "pruning part", "neighbour part"):
        assert section in report, section
    for name in STUDY_FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in report
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 18 and rows[0].endswith("target_density,train_per_device,train_samples_mean,classes_mean")
    capped = [r.split(",") for r in rows[1:] if r.split(",")[17] == "8"]
    assert len(capped) == 4 and all(float(r[18]) == 8.0 for r in capped)
    assert main(["reproduce", *TINY, "--out", str(out)]) == 0
    assert "0 cell(s) computed, 18 reused" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--studies", "main,bogus"], "studies: unknown study 'bogus'"),
    (["--densities", "0"], "densities[0]: must be in (0, 1], got 0.0"),
    (["--densities", "0.5,1.5"], "densities[1]"),
    (["--train-per-device", "0"], "train_per_device[0]: must be >= 1, got 0"),
    (["--partitions", "shards:x"], "partitions: 'shards:x' needs a number"),
    (["--partitions", "zipf:2"], "partitions: 'zipf:2' is not one of"),
    (["--studies", "skew", "--sweep-algorithms", "dpmn,nope"], "nope"),
])
def test_bad_study_flags_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["reproduce", "--out", str(tmp_path / "o"), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fedge reproduce: error:") and needle in err[0], err


def test_first_rounds_of_a_run_are_a_shorter_run() -> None:
    """Accuracy at equal bytes reads the costlier run's curve at an earlier round: that is what running it for
    fewer rounds gives (nothing in these runs depends on the total number of rounds)."""
    from fedge.experiment import ExperimentConfig
    from fedge.runtimes.simulator import simulate

    raw = {"rounds": 2, "data": {"devices": 4}, "train": {"epochs": 1, "threads": 1}}
    for algorithm in ("dfl", "dpmn"):
        long = simulate(build(ExperimentConfig, raw), algorithm, None).history
        short = simulate(build(ExperimentConfig, {**raw, "rounds": 1}), algorithm, None).history
        assert short[0]["accuracy_mean"] == long[0]["accuracy_mean"]
        assert short[0]["bytes_total"] == long[0]["bytes_total"]
