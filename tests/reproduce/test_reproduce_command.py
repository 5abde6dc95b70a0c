"""`fedge reproduce` end to end on a tiny grid: report and figures, a rerun recomputes nothing, a SIGKILLed run
resumes to the same results.csv as an uninterrupted one, and Fashion-MNIST IDX files work with --data-dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.cli import main

# 4 devices, 1 round, 1 seed: main study dpmn/dfl/dpmn-r at δ 0.2, δ study adds δ 0.5, device study = main -> 4 cells.
TINY = ["--rounds", "1", "--seeds", "1", "--deltas", "0.2,0.5", "--device-counts", "4", "--algorithms",
        "dpmn,dfl,dpmn-r", "--set", "data.devices=4", "--set", "train.epochs=1", "--no-progress"]
FIGURES = ["accuracy_vs_round.png", "accuracy_vs_mb.png", "delta_study.png", "accuracy_vs_devices.png"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cells(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}


def test_report_then_rerun_recomputes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "R"
    assert main(["reproduce", *TINY, "--workers", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "4 cell(s) computed, 0 reused" in captured.err
    assert "dpmn" in captured.out and "saving vs dfl" in captured.out
    for name in ["report.md", "results.csv", *FIGURES]:
        assert (out / name).stat().st_size > 0, name
    assert all((out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in FIGURES)
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("algorithm,dataset,devices,delta,seed,rounds")
    assert len(rows) == 1 + 4 and "seconds" not in rows[0]
    report = (out / "report.md").read_text()
    for claim in ("(a) δ = 0.2", "(b) DPMN saves about 45.4%", "(c) DPMN is more accurate than DPMN-R"):
        assert claim in report
    assert "*Rule:*" in report and "![delta study](delta_study.png)" in report
    before, csv_before = _cells(out), (out / "results.csv").read_bytes()

    started = time.perf_counter()
    assert main(["reproduce", *TINY, "--workers", "1", "--out", str(out)]) == 0
    assert time.perf_counter() - started < 30
    assert "0 cell(s) computed, 4 reused" in capsys.readouterr().err
    assert _cells(out) == before  # not one cell file rewritten
    assert (out / "results.csv").read_bytes() == csv_before

    # A run killed during one cell leaves no file for it (and maybe a temp file): only that cell is recomputed.
    victim = sorted(before)[0]
    (out / "cells" / victim).unlink()
    (out / "cells" / f".{victim}.abc.tmp").write_text('{"torn')
    assert main(["reproduce", *TINY, "--workers", "1", "--out", str(out)]) == 0
    assert "1 cell(s) computed, 3 reused" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == csv_before


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed with SIGKILL after its first finished cell, then resumed over a worker pool: results.csv is
    byte-identical to an uninterrupted in-process run (one thread per cell, deterministic engine)."""
    reference = tmp_path / "uninterrupted"
    assert main(["reproduce", *TINY, "--workers", "1", "--out", str(reference)]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "fedge.cli", "reproduce", *TINY, "--workers", "1", "--out",
                             str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (killed.exists() and _cells(killed)):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(_cells(killed))
    assert proc.returncode == -signal.SIGKILL and 1 <= done < 4
    capsys.readouterr()
    assert main(["reproduce", *TINY, "--workers", "2", "--out", str(killed)]) == 0
    assert f"{4 - done} cell(s) computed, {done} reused" in capsys.readouterr().err
    assert (killed / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


def test_fashion_mnist_idx_folder(tmp_path: Path, fashion_mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fashion_mnist_dir
    out = tmp_path / "R"
    args = ["reproduce", "--dataset", "fmnist", "--data-dir", str(data), *TINY, "--workers", "1", "--out", str(out)]
    # The tiny files are not the published ones: refused with a one-line error unless verification is off.
    assert main(args) == 2
    assert "checksum" in capsys.readouterr().err
    assert main([*args, "--no-verify-checksums"]) == 0
    rows = [line.split(",") for line in (out / "results.csv").read_text().splitlines()[1:]]
    assert len(rows) == 4 and {r[1] for r in rows} == {"fmnist"}
    assert all(0.0 <= float(r[8]) <= 1.0 and float(r[10]) >= 0 for r in rows)
    report = (out / "report.md").read_text()
    assert "on fmnist" in report and "--data-dir" in report and "--no-verify-checksums" in report
