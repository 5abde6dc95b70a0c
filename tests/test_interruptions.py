"""Interruptions, in real processes (issue 18, acceptance 3 and 4, and Ctrl-C during imports).

* Each command (`fedge run`, `fedge recsys`, `fedge cache`) reruns into a folder holding a finished run and is
  interrupted with SIGINT and with SIGKILL at several moments (early, mid-run, late, and while summary.json's temp
  file is on disk): the folder always holds one complete, consistent run (the old one, or the new one if it had
  been published), no temp files, no FAILED; SIGINT ends with the one line `fedge <cmd>: interrupted` (exit 130);
  the attempt folder a SIGKILL leaves beside it is removed by the next run.
* `fedge recsys` killed with SIGKILL at random moments and resumed gives the metrics of an uninterrupted run.
* Ctrl-C while the command modules import ends with one line too.

A fork server imports fedge once and forks one command per request, so a kill costs no import (seconds each here).
It runs torch on one thread: fedncf's training is bitwise reproducible across processes only then (with two
intra-op threads its losses differ in the 8th digit from one process to the next, before this change too).
"""

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
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks command processes (POSIX only)")

FORK_SERVER = """
import json, os, signal, sys, time
import sklearn.datasets
import fedge.commands.cache, fedge.commands.recsys, fedge.commands.run
import fedge.caching.runner, fedge.recsys.runner, fedge.runtimes.setup, fedge.runtimes.simulator
from fedge.cli import main
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
real, linger = os.replace, 0.0
def slow_replace(src, dst, *args, **kwargs):
    if linger and str(dst).endswith("summary.json"):
        time.sleep(linger)  # so a signal can land while summary.json's temp file exists
    return real(src, dst, *args, **kwargs)
os.replace = slow_replace
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        linger = request["linger"]
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        code = main(request["argv"])
        sys.stderr.flush()
        with open(request["log"] + ".rc", "w") as handle:
            handle.write(str(code))
        os._exit(code)
    print(pid, flush=True)
"""
VOLATILE = {"round_s", "mean_round_s", "seconds", "phase_seconds", "phase_seconds_by_round", "run_id", "environment",
            "requests_per_second"}


class ForkServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def launch(self, argv: list[str], linger: float = 0.0) -> tuple[int, Path]:
        """Fork `fedge ARGV`; returns its pid and the log its stderr goes to (exit code in LOG.rc when it ends)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        log = self.folder / f"launch-{self.count}.log"
        self.process.stdin.write(json.dumps({"argv": argv, "linger": linger, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline()), log

    def run(self, argv: list[str]) -> float:
        """Run to the end; returns the seconds it took."""
        started = time.monotonic()
        pid, log = self.launch(argv)
        _wait_gone(pid)
        assert Path(f"{log}.rc").read_text() == "0", log.read_text()
        return time.monotonic() - started

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    forks = ForkServer(tmp_path_factory.mktemp("forks"))
    yield forks
    forks.close()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _running(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.005)


def _wait_for(predicate: Callable[[], bool], pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running(pid):
        try:
            if predicate():
                return True
        except FileNotFoundError:  # a folder being listed was renamed meanwhile (the run finishing): look again
            pass
        time.sleep(0.002)
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _view(folder: Path) -> dict[str, Any]:
    """What a run folder says, without wall-clock values and run ids (JSON parsed strictly; binary files by name)."""
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token} in {folder}")

    view: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix == ".json":
            view[name] = _plain(json.loads(path.read_text(), parse_constant=refuse))
        elif path.suffix == ".jsonl":
            view[name] = [_plain(json.loads(x, parse_constant=refuse)) for x in path.read_text().splitlines()]
        elif path.suffix == ".yaml":
            view[name] = path.read_text()
        else:
            view[name] = path.stat().st_size > 0
    return view


def _attempts(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.attempt-")]


@pytest.fixture(scope="module")
def ratings_dir(tmp_path_factory: pytest.TempPathFactory, ratings_csv: Callable[..., Path]) -> Path:
    """An ml-latest-small ratings.csv: 60 users, 12-20 of 80 movies each, ratings 1-5."""
    return ratings_csv(tmp_path_factory.mktemp("ml"), users=60, items=80, per_user=(12, 20))


def _argv(command: str, out: Path, data: Path) -> list[str]:
    if command == "run":
        return ["run", "--devices", "4", "--rounds", "3", "--set", "train.epochs=1", "--no-progress", "--out", str(out)]
    if command == "recsys":
        return ["recsys", "--data-dir", str(data), "--algorithm", "fedncf", "--rounds", "12", "--no-progress",
                "--set", "data.eval_negatives=20", "--set", "model.dim=8", "--out", str(out)]
    return ["cache", "--trace", "synthetic", "--policy", "lru,fed-dqn", "--episodes", "3", "--edges", "2", "--set",
            "trace.num_items=60", "--set", "trace.requests_per_episode=300", "--set", "agent.warmup=16", "--set",
            "agent.batch_size=8", "--no-progress", "--out", str(out)]


@pytest.mark.parametrize("command", ["run", "recsys", "cache"])
def test_interrupted_rerun_leaves_the_finished_folder_consistent(command: str, server: ForkServer, tmp_path: Path,
                                                                 ratings_dir: Path) -> None:
    out = tmp_path / "out"
    argv = _argv(command, out, ratings_dir)
    seconds = server.run(argv)  # the finished folder
    finished = _view(out)
    assert "summary.json" in finished or "comparison.json" in finished
    moments = [("SIGINT", 0.1), ("SIGINT", 0.5), ("SIGINT", "write"), ("SIGKILL", 0.3), ("SIGKILL", 0.8),
               ("SIGKILL", "write")]
    interrupted = ctrl_c = 0
    for name, moment in moments:
        sig = getattr(signal, name)
        pid, log = server.launch(argv, linger=0.4 if moment == "write" else 0.0)
        if moment == "write":  # while the new summary.json's temp file is on disk, before its rename
            assert _wait_for(lambda: any(p.name.startswith(".summary.json.") for a in _attempts(out)
                                         for p in a.rglob(".*.tmp")), pid), (name, "no summary temp file seen")
        else:
            time.sleep(moment * seconds)
        if _running(pid):
            os.kill(pid, sig)
            interrupted += 1
        _wait_gone(pid)
        where = f"{command}, {name} at {moment}"
        assert _view(out) == finished, where  # the old run, or the same run completed anew: never a mix
        assert not list(out.rglob(".*.tmp")) and not (out / "FAILED").exists(), where
        if sig == signal.SIGINT:
            code, err = Path(f"{log}.rc").read_text(), log.read_text()
            assert "Traceback" not in err, err
            assert code == "0" or (code == "130" and err.strip().splitlines()[-1] == f"fedge {command}: interrupted")
            ctrl_c += code == "130"
            assert _attempts(out) == [], where  # Ctrl-C removes the attempt
        else:
            assert len(_attempts(out)) <= 1, where  # a SIGKILLed attempt stays until the next run
    assert interrupted >= 4 and ctrl_c >= 2
    server.run(argv)
    assert _view(out) == finished and _attempts(out) == []


def test_recsys_sigkill_then_resume_matches_uninterrupted(server: ForkServer, tmp_path: Path,
                                                          ratings_dir: Path) -> None:
    from fedge.recsys import checkpoint

    flags = ["recsys", "--data-dir", str(ratings_dir), "--algorithm", "fedncf", "--rounds", "30", "--no-progress",
             "--set", "data.eval_negatives=20", "--set", "model.dim=8", "--set", "train.server_optimizer=adam",
             "--set", "train.server_lr=0.05", "--set", "eval_every=2", "--checkpoint-every", "1"]
    reference = tmp_path / "reference"
    server.run([*flags, "--out", str(reference)])
    rounds = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    per_round = sorted(r["round_s"] for r in rounds)[len(rounds) // 2]
    out = tmp_path / "killed"
    rng = random.Random(18)
    kills = resumed_mid_run = 0
    path = out / checkpoint.FILENAME
    for _ in range(4):
        if path.exists():
            resumed_mid_run += checkpoint.load(path).round < 30
        where = ["--resume", str(out)] if path.exists() else ["--out", str(out)]
        launched = time.time()
        pid, log = server.launch([*flags, *where])
        _wait_for(lambda t=launched, p=path: p.exists() and p.stat().st_mtime > t, pid)
        time.sleep(rng.uniform(0.0, 3.0 * per_round))
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
            kills += 1
        _wait_gone(pid)
    server.run([*flags, "--resume", str(out)])
    assert kills >= 2 and resumed_mid_run >= 1
    views = [_view(folder) for folder in (out, reference)]
    for view in views:  # the two runs differ in their folder's name only
        view.pop("config.yaml")
        view["summary.json"]["config"].pop("out_dir")
    assert views[0] == views[1]  # metrics, summary (all but wall-clock keys), files
    import torch

    for name in ("item_embeddings.pt",):
        assert torch.equal(torch.load(out / name)["item_embeddings"], torch.load(reference / name)["item_embeddings"])
    assert (out / "topk.json").read_bytes() == (reference / "topk.json").read_bytes()


SCRIPT = ("import sys; import fedge.cli as cli; print('ready', flush=True); sys.argv = ['fedge', *sys.argv[1:]]; "
          "sys.exit(cli.main())")


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.4])
def test_ctrl_c_while_importing_is_one_line(delay: float, tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, "run", "--rounds", "50", "--no-progress", "--out",
                                str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "fedge run: interrupted"


def _group(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
def test_ctrl_c_of_reproduce_with_workers_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C in a terminal reaches the whole process group: the worker processes must neither print tracebacks
    nor outlive the command."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fedge.cli", "reproduce", "--rounds", "40", "--seeds", "1", "--deltas", "0.2,0.5",
         "--device-counts", "4", "--algorithms", "dpmn,dfl,dpmn-r", "--set", "data.devices=4", "--set",
         "train.epochs=1", "--no-progress", "--workers", "2", "--out", str(tmp_path / "R")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_group(process.pid)) < 3 and time.monotonic() < deadline:  # the command and its two workers
        time.sleep(0.05)
    time.sleep(0.5)  # the workers are still importing torch, or already computing cells: both must stay quiet
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "fedge reproduce: interrupted"
    deadline = time.monotonic() + 20
    while _group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group(process.pid) == []
