"""`fedge run` over several processes (torchrun, gloo on 127.0.0.1) writes the single-process metrics byte for byte.

Each test starts real processes with torchrun's own entry point and is bounded in time. Devices are sharded in
contiguous blocks; 3 processes do not divide 20 devices.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedge.cli import main

ALGORITHMS = "dpmn,dfl,fedavg,hfl"
FAULTS = ["--config", "configs/hfl-comparison.yaml", "--set", "faults.device_failure=0.3",
          "--set", "faults.leader_failure=0.05", "--rounds", "5", "--no-progress", "--algorithm", ALGORITHMS]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert main(["run", *FAULTS, "--out", str(out)]) == 0
    finally:
        os.chdir(cwd)
    return out


def _same_metrics(single: Path, distributed: Path) -> None:
    for name in ALGORITHMS.split(","):
        expected = (single / name / "metrics.jsonl").read_bytes()
        assert expected and (distributed / name / "metrics.jsonl").read_bytes() == expected, name
        assert (distributed / name / "neighbours.jsonl").read_bytes() == \
            (single / name / "neighbours.jsonl").read_bytes(), name


@pytest.mark.parametrize("processes", [2, 3])
def test_torchrun_writes_the_single_process_metrics(single: Path, tmp_path: Path, processes: int) -> None:
    out = tmp_path / "run"
    done = _torchrun("--standalone", f"--nproc-per-node={processes}", "-m", "fedge", "run", *FAULTS,
                     "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    _same_metrics(single, out)
    summary = (out / "dpmn" / "summary.json").read_text()
    assert '"transport": "torch.distributed"' in summary and f'"processes": {processes}' in summary


def test_two_nodes_on_loopback_give_the_same_metrics(single: Path, tmp_path: Path) -> None:
    """Two torchrun invocations, one per "machine", meeting at a c10d rendezvous on 127.0.0.1."""
    out, port = tmp_path / "run", _free_port()
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=fedge-test", "-m", "fedge", "run", *FAULTS, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--node-rank={rank}", *common],
                              cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for rank in (0, 1)]
    results = [node.communicate(timeout=240) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in results]
    _same_metrics(single, out)


def test_more_processes_than_devices_is_a_one_line_error(tmp_path: Path) -> None:
    done = _torchrun("--standalone", "--nproc-per-node=3", "-m", "fedge", "run", "--devices", "2", "--rounds", "1",
                     "--algorithm", "dfl", "--no-progress", "--out", str(tmp_path / "run"), timeout=120)
    assert done.returncode != 0
    assert "3 processes for 2 devices" in done.stderr


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def test_a_killed_worker_is_restarted_and_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    """torchrun --max-restarts 1: SIGKILL one worker mid-run; every process restarts from the last complete
    checkpoint and the run ends with the metrics of an uninterrupted one."""
    flags = ["--algorithm", "dpmn,fedavg", "--rounds", "12", "--no-progress"]
    reference = tmp_path / "reference"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert main(["run", *flags, "--out", str(reference)]) == 0
    finally:
        os.chdir(cwd)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 "--max-restarts=1", "-m", "fedge", "run", *flags, "--checkpoint-every", "2",
                                 "--out", str(out)], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    metrics, deadline = out / "dpmn" / "metrics.jsonl", time.monotonic() + 180
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.05)
    workers = [child for agent in _children(launcher.pid) for child in [agent, *_children(agent)]]
    workers = [pid for pid in workers if pid != launcher.pid] or _children(launcher.pid)
    assert workers, "no worker process to kill"
    os.kill(workers[-1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    assert "exitcode: -9" in err  # the kill happened and was survived by a restart
    for name in ("dpmn", "fedavg"):
        assert (out / name / "metrics.jsonl").read_bytes() == (reference / name / "metrics.jsonl").read_bytes(), name
