"""Checkpoint and resume: refusals of truncated/corrupt/foreign checkpoints, bitwise-identical resumption, and
SIGKILL at random moments (including in the middle of a checkpoint write) followed by `fedge run --resume`."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedge.cli import main
from fedge.config import ConfigError, build
from fedge.experiment import ExperimentConfig
from fedge.runtimes import checkpoint
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import simulate

FLAGS = ["--devices", "5", "--rounds", "4", "--algorithm", "dpmn,hfl", "--no-progress", "--set", "train.epochs=1",
         "--set", "neighbours.k_max=2", "--set", "neighbours.bootstrap_probes=3", "--set", "pruning.ramp_rounds=2",
         "--set", "faults.device_failure=0.2", "--set", "faults.leader_failure=0.2", "--set", "latency.enabled=true",
         "--set", "hierarchy.clusters=2"]
# A fork server: imports fedge once (seconds on a busy machine), then forks one `fedge run` process per request and
# answers with its pid, so the test can SIGKILL real processes without paying the import each time. Its os.replace
# lingers before renaming a checkpoint into place when asked, so a kill can land while the temp file exists.
FORK_SERVER = """
import json, os, signal, sys, time
import sklearn.datasets  # the digits loader's import, paid once here rather than in every child
from fedge.cli import main
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
real, linger = os.replace, 0.0
def slow_replace(src, dst, *args, **kwargs):
    if linger and str(dst).endswith("checkpoint.pt"):
        time.sleep(linger)
    return real(src, dst, *args, **kwargs)
os.replace = slow_replace
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        linger = request["linger"]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os._exit(main(request["argv"]))
    print(pid, flush=True)
"""

def tiny(**changes: object) -> ExperimentConfig:
    raw = {"rounds": 4, "data": {"devices": 5}, "train": {"epochs": 1}, "algorithms": ["dpmn"],
           "pruning": {"ramp_rounds": 2}, "neighbours": {"k_max": 2, "bootstrap_probes": 3},
           "faults": {"device_failure": 0.2}}
    return build(ExperimentConfig, {**raw, **changes})


def test_resume_in_process_is_bitwise_identical(tmp_path: Path) -> None:
    config = tiny(rounds=3)
    setup = prepare(config)
    straight = simulate(config, "dpmn", tmp_path / "straight", setup=setup, checkpoint_every=2)
    simulate(tiny(rounds=1), "dpmn", tmp_path / "resumed", setup=setup, checkpoint_every=1)
    resumed = simulate(config, "dpmn", tmp_path / "resumed", setup=setup, checkpoint_every=2, resume=True)
    assert resumed.history == straight.history

    def same(a: object, b: object) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return a == b

    for key, value in straight.state.state_dict().items():
        assert same(value, resumed.state.state_dict()[key]), key
    for name in ("metrics.jsonl", "neighbours.jsonl"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()


def test_refuses_truncated_corrupt_foreign_and_other_algorithm(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny(rounds=1)
    simulate(config, "dpmn", tmp_path / "run" / "dpmn", checkpoint_every=1)
    path = tmp_path / "run" / "dpmn" / checkpoint.FILENAME
    good = path.read_bytes()
    assert checkpoint.load(path, config, "dpmn").round == 1
    with pytest.raises(ConfigError, match="another config"):
        checkpoint.load(path, tiny(rounds=1, seed=7), "dpmn")
    with pytest.raises(ConfigError, match="algorithm 'dpmn', not 'dfl'"):
        checkpoint.load(path, config, "dfl")
    flipped = bytearray(good)
    flipped[-50] ^= 0xFF
    cases = {"truncated": good[: len(good) // 3], "corrupt": bytes(flipped), "not a fedge checkpoint": b"junk",
             "truncated header": checkpoint.MAGIC + b"abc"}
    for needle, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=needle):
            checkpoint.load(path)
        metrics_before = (tmp_path / "run" / "dpmn" / "metrics.jsonl").read_bytes()
        code = main(["run", "--resume", str(tmp_path / "run"), "--devices", "5", "--rounds", "1", "--algorithm",
                     "dpmn", "--no-progress", "--set", "train.epochs=1", "--set", "pruning.ramp_rounds=2", "--set",
                     "neighbours.k_max=2", "--set", "neighbours.bootstrap_probes=3", "--set",
                     "faults.device_failure=0.2"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
        assert (tmp_path / "run" / "dpmn" / "metrics.jsonl").read_bytes() == metrics_before  # nothing touched
    path.write_bytes(good)
    code = main(["run", "--resume", str(tmp_path / "run"), "--set", "seed=3", "--algorithm", "dpmn"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "another config" in err and len(err.splitlines()) == 1


class ForkServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def ready(self) -> None:
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def launch(self, argv: list[str], linger: float = 0.0) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"argv": ["run", *argv], "linger": linger}) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(predicate: Callable[[], bool], pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running(pid):
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks `fedge run` processes (POSIX only)")
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    server = ForkServer()  # imports in the background while the reference runs here
    try:
        reference = tmp_path / "reference"
        started = time.monotonic()
        assert main(["run", *FLAGS, "--out", str(reference)]) == 0
        per_round = (time.monotonic() - started) / 8  # an upper bound on one round of one of the 2 algorithms
        server.ready()
        out = tmp_path / "killed"
        rng = random.Random(20261127)
        kills, mid_write, mid_run_resumes = 0, False, 0
        for attempt in range(4):
            where = ["--resume", str(out)] if out.is_dir() else ["--out", str(out)]
            checkpoints = sorted(out.glob("*/checkpoint.pt")) if out.is_dir() else []
            if any(checkpoint.load(p).round < 4 for p in checkpoints):
                mid_run_resumes += 1
            during_write = attempt == 1
            launched = time.time()
            pid = server.launch([*FLAGS, "--checkpoint-every", "1", *where], linger=0.5 if during_write else 0.0)
            if during_write:  # kill while a checkpoint's temp file is on disk, before its rename
                mid_write = _wait_for(lambda: any(out.glob("*/.checkpoint.pt.*.tmp")), pid)
            else:  # kill at a random moment after this process saved its first checkpoint
                _wait_for(lambda t=launched: any(p.stat().st_mtime > t for p in out.glob("*/checkpoint.pt")), pid)
                time.sleep(rng.uniform(0.0, 1.5 * per_round))
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
                kills += 1
            while _running(pid):
                time.sleep(0.01)
    finally:
        server.close()
    assert main(["run", *FLAGS, "--checkpoint-every", "1", "--resume", str(out)]) == 0
    assert kills >= 3 and mid_write and mid_run_resumes >= 2
    for name in ("dpmn", "hfl"):
        for log in ("metrics.jsonl", "neighbours.jsonl"):
            assert (out / name / log).read_bytes() == (reference / name / log).read_bytes(), (name, log)
        assert not list((out / name).glob(".checkpoint.pt.*.tmp"))
