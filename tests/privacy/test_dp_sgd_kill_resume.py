"""A `fedge run` with record-level DP-SGD killed with SIGKILL and resumed reports the same ε, round by round, as the
run that was not interrupted, and trains the same models: the checkpoint carries the accountant's history and each
device's generator (its Poisson batches and noise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedge.cli import main
from fedge.runtimes import checkpoint

ROUNDS = 20
FLAGS = ["--devices", "5", "--rounds", str(ROUNDS), "--algorithm", "dpmn", "--no-progress", "--set",
         "train.epochs=1", "--set", "privacy.mechanism=dp-sgd", "--set", "privacy.noise_multiplier=1.0", "--set",
         "privacy.max_grad_norm=1.0", "--set", "pruning.tolerance=1", "--set", "pruning.ramp_rounds=2", "--set",
         "neighbours.k_max=2"]


def test_sigkilled_dp_sgd_run_resumes_to_the_same_epsilon(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert main(["run", *FLAGS, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    saved = out / "dpmn" / checkpoint.FILENAME
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "fedge", "run", *FLAGS, "--checkpoint-every", "1", "--out",
                                str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not saved.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert 1 <= checkpoint.load(saved).round < ROUNDS  # killed in the middle of the run
    assert main(["run", *FLAGS, "--checkpoint-every", "1", "--resume", str(out)]) == 0
    straight = [json.loads(line) for line in (reference / "dpmn" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (out / "dpmn" / "metrics.jsonl").read_text().splitlines()]
    assert len(resumed) == ROUNDS and [r["epsilon"] for r in resumed] == [r["epsilon"] for r in straight]
    assert resumed == straight  # every metric, the models' accuracy included
    assert resumed[-1]["epsilon"] > resumed[0]["epsilon"] > 0
    summaries = [json.loads((folder / "dpmn" / "summary.json").read_text()) for folder in (reference, out)]
    assert summaries[0]["privacy"]["epsilon"] == summaries[1]["privacy"]["epsilon"] == straight[-1]["epsilon"]
