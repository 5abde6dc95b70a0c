"""Timed runs of one contender each: fedge's simulator and its trainers alone (in this process), Flower (a fresh
subprocess per run); the bare loop's fresh processes are `benchmarks.bare.bare_limit`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.workloads import Workload, experiment
from fedge.core.streams import Streams
from fedge.runtimes.setup import Setup
from fedge.runtimes.simulator import simulate
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer, choose_batched

ROOT = Path(__file__).resolve().parent.parent


def save_report(report: dict[str, Any], out: Path) -> None:
    """Write a benchmark's JSON report (creating its folder) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def reset_peak_memory() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux clear_refs 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    """Peak resident memory of this process (VmHWM), which counts torch's allocations too; NaN off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def fedge_round_throughput(workload: Workload, algorithm: str, setup: Setup, rounds: int, seed: int,
                           threads: int, batched: str = "auto") -> dict[str, Any]:
    """Samples/s of `rounds` rounds of `algorithm`: train, prune (with its validation pass), select, exchange and
    combine; the evaluation phase is left out, as the bare loop and Flower do not evaluate (its time is in
    "phase_seconds"). With rounds >= 2 the first round is left out: it is the one without neighbours."""
    config = experiment(workload, algorithm, rounds, seed, threads, batched)
    stamps: list[float] = []
    started = time.perf_counter()
    summary = simulate(config, algorithm, None, setup=setup,
                       on_round=lambda _: stamps.append(time.perf_counter())).summary
    edges = [started, *stamps]
    evaluation = [phases.get("evaluate", 0.0) for phases in summary["phase_seconds_by_round"]]
    durations = [b - a - e for a, b, e in zip(edges, edges[1:], evaluation)]
    measured = durations[1:] if len(durations) > 1 else durations
    per_round = int(setup.data.train_sizes.sum())
    return {
        "samples_per_s": len(measured) * per_round / sum(measured),
        "round_seconds": durations,  # without the evaluation phase
        # the rounds measured for throughput (2.. when rounds >= 2), and the first round on its own
        "phase_seconds": _sum_phases(summary["phase_seconds_by_round"][1:] if rounds > 1
                                     else summary["phase_seconds_by_round"]),
        "first_round_phase_seconds": summary["phase_seconds_by_round"][0],
        "trainer": "batched" if choose_batched(setup.model, config.train) else "sequential",
    }


def _sum_phases(rounds: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for phases in rounds:
        for phase, seconds in phases.items():
            total[phase] = total.get(phase, 0.0) + seconds
    return total


def trainer_throughput(setup: Setup, workload: Workload, seed: int, threads: int) -> dict[str, float]:
    """Samples/s of one local epoch on every device, device by device vs batched (no penalty, dense masks)."""
    config = experiment(workload, "fedavg", 1, seed, threads)
    n = len(setup.data.devices)
    out = {}
    for name, cls in (("sequential", SequentialTrainer), ("batched", BatchedTrainer)):
        trainer = cls(setup.model, setup.data.devices, config.train)
        bank = setup.initial.expand(n, -1).clone()
        masks = torch.ones_like(bank, dtype=torch.bool)
        started = time.perf_counter()
        generators = Streams(seed).device_generators("train", torch.arange(n), 1)
        trainer.train_all(bank, masks, None, torch.arange(n), None, generators)
        out[name] = int(setup.data.train_sizes.sum()) / (time.perf_counter() - started)
    return out


def flower_python(explicit: str | None) -> str | None:
    """The Python that can import flwr: `explicit`, else this interpreter when it has flwr; None otherwise."""
    candidates = [explicit] if explicit else [sys.executable]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import flwr.simulation, ray"], capture_output=True, cwd=ROOT)
        if probe.returncode == 0:
            return python
    return None


def flower_throughput(python: str, workload: Workload, rounds: int, seed: int, timeout: float) -> dict[str, Any]:
    """Run `benchmarks.flower_sim` in a fresh subprocess; returns its JSON (or an "error" entry)."""
    command = [python, "-m", "benchmarks.flower_sim", "--clients", str(workload.clients), "--samples",
               str(workload.samples), "--rounds", str(rounds), "--seed", str(seed)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"Flower run exceeded {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"Flower run failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])
