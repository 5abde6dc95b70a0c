"""`fedge run` over several processes (torchrun, gloo on 127.0.0.1) writes the single-process metrics byte for byte.

Each test starts real processes with torchrun's own entry point and is bounded in time. Devices are sharded in
contiguous blocks; 3 processes do not divide 20 devices.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
