"""The practical limit: a bare PyTorch FedAvg loop with no framework (nn.Module + torch.optim.SGD).

Each round every client in turn loads the global weights, runs one local epoch of SGD (batch 32, shuffled) on its
own samples, and the server averages the client models weighted by sample count (McMahan et al. 2017).

The limit is measured in fresh processes (`bare_limit`), in the two configurations a user could pick on the machine,
and the better one is the limit (issue 17: references must be the real limit):

* **one process on all cores**: one client at a time on `cores` intra-op threads;
* **one process per core**: `cores` processes of one intra-op thread, each training its share of the clients
  (client c goes to process c mod P), started together behind a file barrier; their throughputs are summed. The
  processes do not exchange models between rounds, so this is an upper bound on what such a split could reach.

Each process runs one untimed warm-up round first (torch's lazy initialisation), as fedge's first round is not timed.

    python -m benchmarks.bare --clients 500 --samples 64 --rounds 3 --threads 1 --share 0 --of 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.workloads import BATCH_SIZE, LR, train_tensors
from fedge.models.vision import lenet5

ROOT = Path(__file__).resolve().parent.parent


def bare_fedavg(clients: int, samples: int, rounds: int, seed: int, share: int = 0, of: int = 1,
                before_timing: Any = None) -> dict[str, float]:
    """Train a warm-up round, then `rounds` timed rounds on clients share, share + of, ...; returns samples/s over
    the timed rounds (data creation excluded) and their start and end (`time.perf_counter`, one clock machine-wide on
    Linux). `before_timing` is called after the data and model are built (the per-core barrier)."""
    data = [train_tensors(seed, c, samples) for c in range(share, clients, of)]
    torch.manual_seed(seed)
    net = lenet5((1, 28, 28), 10)
    global_weights = [p.detach().clone() for p in net.parameters()]
    shuffle = torch.Generator().manual_seed(seed)
    if before_timing is not None:
        before_timing()
    started = 0.0
    for number in range(rounds + 1):
        if number == 1:
            started = time.perf_counter()
        total = [torch.zeros_like(p) for p in global_weights]
        for x, y in data:
            with torch.no_grad():
                for p, w in zip(net.parameters(), global_weights):
                    p.copy_(w)
            optimizer = torch.optim.SGD(net.parameters(), lr=LR)
            order = torch.randperm(len(y), generator=shuffle)
            for first in range(0, len(y), BATCH_SIZE):
                batch = order[first:first + BATCH_SIZE]
                optimizer.zero_grad()
                F.cross_entropy(net(x[batch]), y[batch]).backward()
                optimizer.step()
            with torch.no_grad():
                for t, p in zip(total, net.parameters()):
                    t.add_(p, alpha=len(y))
        global_weights = [t / (len(data) * samples) for t in total]
    ended = time.perf_counter()
    return {"samples_per_s": rounds * len(data) * samples / (ended - started), "seconds": ended - started,
            "start": started, "end": ended, "clients": len(data)}


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {timeout:.0f} s")
        time.sleep(0.001)


def bare_limit(clients: int, samples: int, rounds: int, seed: int, cores: int) -> dict[str, Any]:
    """The bare loop in fresh processes, in both configurations (module docstring); "limit" is the better one."""
    configurations = {f"1 process x {cores} threads": (1, cores), f"{cores} processes x 1 thread": (cores, 1)}
    out: dict[str, Any] = {}
    for name, (processes, threads) in configurations.items():
        with tempfile.TemporaryDirectory() as folder:
            go = Path(folder) / "go"
            commands = [[sys.executable, "-m", "benchmarks.bare", "--clients", str(clients), "--samples",
                         str(samples), "--rounds", str(rounds), "--seed", str(seed), "--threads", str(threads),
                         "--share", str(k), "--of", str(processes), "--ready", str(Path(folder) / f"ready{k}"),
                         "--go", str(go)] for k in range(processes)]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
            workers = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for c in commands]
            for k in range(processes):
                _wait_for(Path(folder) / f"ready{k}")
            go.touch()
            results = []
            for worker in workers:
                stdout, _ = worker.communicate(timeout=3600)
                if worker.returncode != 0:
                    raise RuntimeError(f"bare-loop process failed (exit {worker.returncode})")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
        out[name] = {"samples_per_s": sum(r["samples_per_s"] for r in results),
                     "span_samples_per_s": rounds * clients * samples
                     / (max(r["end"] for r in results) - min(r["start"] for r in results)),
                     "processes": processes, "threads": threads}
    best = max(out, key=lambda name: out[name]["samples_per_s"])
    return {"configurations": out, "limit": out[best]["samples_per_s"], "limit_configuration": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--share", type=int, default=0)
    parser.add_argument("--of", type=int, default=1)
    parser.add_argument("--ready", type=Path, help="file to create once the data is built (the barrier)")
    parser.add_argument("--go", type=Path, help="file to wait for before training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def barrier() -> None:
        if args.ready is not None:
            args.ready.touch()
        if args.go is not None:
            _wait_for(args.go)

    result = bare_fedavg(args.clients, args.samples, args.rounds, args.seed, args.share, args.of, barrier)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
