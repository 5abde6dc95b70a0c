"""`fedge run` end to end: bad input is a one-line error with exit code 2; a real-format dataset folder works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.cli import main

FAST = ["--rounds", "1", "--devices", "4", "--no-progress", "--set", "train.epochs=1"]


@pytest.mark.parametrize("args,needle", [
    (["--set", "rounds=-1"], "rounds"),
    (["--set", "bogus=1"], "unknown config key bogus"),
    (["--set", "data.bogus=1"], "unknown config key data.bogus"),
    (["--set", "neighbours.delta=2"], "neighbours.delta"),
    (["--set", "neighbours.k_min=5", "--set", "neighbours.k_max=2"], "k_min"),
    (["--set", "pruning.target_density=0"], "pruning.target_density"),
    (["--set", "train.lr=fast"], "train.lr"),
    (["--partition", "shards:x"], "partition"),
    (["--partition", "zipf:2"], "partition"),
    (["--algorithm", "dpmx"], "dpmx"),
    (["--dataset", "mnist3"], "mnist3"),
    (["--dataset", "fmnist", "--data-dir", "/nonexistent/fm"], "/nonexistent/fm"),
    (["--devices", "1"], "data.devices"),
    (["--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--out", str(tmp_path / "o"), *FAST, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_exit_code_is_2() -> None:
    result = subprocess.run([sys.executable, "-m", "fedge.cli", "run", "--set", "rounds=0", "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fedge run: error: rounds: must be >= 1, got 0"]


def test_run_on_fashion_mnist_idx_folder(tmp_path: Path, fashion_mnist_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = fashion_mnist_dir
    out = tmp_path / "run"
    # The tiny files are not the published ones, so the published checksums are switched off for this test.
    code = main(["run", "--dataset", "fmnist", "--data-dir", str(data), "--out", str(out), "--rounds", "2",
                 "--devices", "5", "--partition", "shards:2", "--no-progress", "--set", "data.verify_checksums=false",
                 "--set", "train.epochs=1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "dpmn" in table and "dfl" in table
    for algorithm in ("dpmn", "dfl"):
        rows = [json.loads(line) for line in (out / algorithm / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [1, 2]
        required = {"round", "algorithm", "accuracy_mean", "accuracy_p10", "loss_mean", "bytes_round",
                    "bytes_total", "neighbours_mean", "density_mean"}
        assert required <= set(rows[-1])
        summary = json.loads((out / algorithm / "summary.json").read_text())
        assert summary["config"]["data"]["dataset"] == "fmnist"
        assert summary["model_parameters"] == 61706  # LeNet-5 on 28×28
        assert len((out / algorithm / "neighbours.jsonl").read_text().splitlines()) == 2
    # Without switching verification off, the non-published files are refused with a one-line error.
    code = main(["run", "--dataset", "fmnist", "--data-dir", str(data), "--out", str(out), *FAST])
    assert code == 2
    assert "checksum" in capsys.readouterr().err
