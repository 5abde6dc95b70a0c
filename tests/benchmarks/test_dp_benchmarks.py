"""The DP-SGD cost benchmarks run end to end on a small scale and write what the docs cite (no timing is asserted:
speed is measured in benchmarks/, not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import dp_sgd_cost, dp_sgd_opacus

pytest.importorskip("opacus")


def test_opacus_reference_writes_per_step_ratios(tmp_path: Path) -> None:
    out = tmp_path / "opacus.json"
    assert dp_sgd_opacus.main(["--repeats", "2", "--clients", "1", "--samples", "96", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert len(result["step_ratio"]["per_repeat"]) == 2 and result["step_ratio"]["median"] > 0
    assert result["samples"] == 96 and result["epsilon_after_all_epochs"] > 0
    assert all(steps == 3 for _, _, steps in result["epochs"]["plain"])  # 96 samples, batch 32


def test_fedge_cost_writes_both_sides_and_the_machine(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    assert dp_sgd_cost.main(["--repeats", "1", "--only", "lenet5-digits-20", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["steps"]["plain"] > 0 and result["steps"]["dp_sgd"] > 0 and result["step_ratio"]["median"] > 0
    assert report["environment"]["torch"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit) as stopped:
        dp_sgd_opacus.main(["--samples", "4"])
    assert stopped.value.code == 2
