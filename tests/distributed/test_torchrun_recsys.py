"""`fedge recsys` over several processes (torchrun, gloo on 127.0.0.1): users sharded in contiguous blocks give the
one-process run's HR@10, NDCG@10 and bytes.

The bytes are exact (every message has the same size wherever its client trains). The models agree to float
rounding only: a process trains its users as one stacked batch, and a batch of other users lays the same numbers out
at other offsets, where vectorised kernels round some of them differently (1 ulp; docs/distributed.md). The metrics
are compared exactly and the loss to 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedge.cli import main
from fedge.recsys.exchange import batches

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ratings(tmp_path_factory: pytest.TempPathFactory, ratings_csv: Callable[..., Path]) -> Path:
    """An ml-latest-small ratings.csv: 50 users, 10-25 of 120 movies each."""
    return ratings_csv(tmp_path_factory.mktemp("ml"), users=50, items=120, per_user=(10, 25), seed=3)


def _flags(ratings: Path, out: Path, algorithm: str = "fedmf") -> list[str]:
    return ["recsys", "--algorithm", algorithm, "--data-dir", str(ratings), "--rounds", "4", "--no-progress",
            "--set", "data.eval_negatives=30", "--set", "model.dim=8", "--set", "train.client_fraction=0.6",
            "--out", str(out)]


def _torchrun(processes: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", "-m", "fedge", *argv], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=240)


@pytest.fixture(scope="module")
def single(ratings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(_flags(ratings, out)) == 0
    return out


def _records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("processes", [2, 3])
def test_fedmf_over_processes_gives_the_one_process_metrics_and_bytes(single: Path, ratings: Path, tmp_path: Path,
                                                                       processes: int) -> None:
    out = tmp_path / "run"
    done = _torchrun(processes, _flags(ratings, out))
    assert done.returncode == 0, done.stderr[-3000:]
    one, many = _records(single), _records(out)
    assert len(one) == len(many) == 4
    for expected, got in zip(one, many, strict=True):
        assert set(expected) == set(got)
        for key in expected:
            if key == "loss":
                assert got[key] == pytest.approx(expected[key], rel=1e-6)
            elif key != "round_s":
                assert got[key] == expected[key], (expected["round"], key)
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert summary["transport"] == "torch.distributed" and summary["processes"] == processes
    for key in ("best_round", "val_hr@10", "test_hr@10", "val_ndcg@10", "test_ndcg@10", "mb_up", "mb_down",
                "mb_total", "bytes_by_link", "messages_by_link", "bytes_by_kind"):
        assert summary[key] == reference[key], key
    assert summary["distributed_overhead_bytes"] > 0
    assert done.stdout.count("fedge recsys: fedmf") == 1  # only the first process prints


def test_an_algorithm_that_runs_in_one_process_only_is_a_one_line_error(ratings: Path, tmp_path: Path) -> None:
    done = _torchrun(2, _flags(ratings, tmp_path / "run", algorithm="fedmeta"))
    assert done.returncode != 0
    assert "fedge recsys: error: algorithm: fedmeta runs in one process only" in done.stderr


def test_batches_are_cut_over_the_whole_round_on_every_process() -> None:
    """Every process sends the same batches (each is a collective); its own clients fall into the batch that holds
    them in the whole round, and a batch can hold none of them."""
    everyone = torch.tensor([0, 2, 3, 5, 8, 9, 11])
    length = (1 << 23) // 2  # two clients per batch
    whole = batches(everyone, None, length)
    assert [(lo, hi) for lo, hi, _, _ in whole] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    first, second = everyone[everyone < 5], everyone[everyone >= 5]
    mine = batches(first, everyone, length)
    theirs = batches(second, everyone, length)
    assert [b[:2] for b in mine] == [b[:2] for b in theirs] == [b[:2] for b in whole]
    assert [b[2:] for b in mine] == [(0, 2), (2, 3), (3, 3), (3, 3)]
    assert [b[2:] for b in theirs] == [(0, 0), (0, 1), (1, 3), (3, 4)]
