"""Throughput of `fedge run` over processes against the in-process simulator, side by side in one invocation.

    python -m benchmarks.distributed --rounds 3 --repeats 2 [--workload lenet5-500x64] [--limit]

For a LeNet-5 workload (`benchmarks.workloads`, synthetic samples, throughput only; default 100 devices × 600),
each algorithm runs: the threaded in-process simulator (one process, `train.threads` = every core), then torchrun
with 1 and with 2 processes (one device thread each: cores / processes). Each contender is a fresh process (or set of
processes), alternating in every repeat. Reported: training samples per second (rounds × samples a round / wall
seconds of the rounds, evaluation included, start-up excluded), the same over rounds 2.. without the evaluation
phase (`training_samples_per_s`, what `benchmarks.run` compares with the bare-loop limit), and, for the distributed
runs, the share of round time the ranks spent inside the torch.distributed transport (encoding, swapping,
decoding). `--limit` adds the bare-loop limit (`benchmarks.bare.bare_limit`, fresh processes) as a contender of every
repeat and reports each fedge configuration against it. Results go to benchmarks/results/distributed-DATE.json with
the machine (`fedge.runfolder.environment()`).

`--worker` is the per-process entry point torchrun starts; not for direct use.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def worker(algorithm: str, rounds: int, threads: int, result: Path, workload_name: str) -> None:
    """Run `rounds` rounds of `algorithm` on the workload in this process (distributed when launched by torchrun)."""
    import torch

    from benchmarks.workloads import experiment, lenet_federation, standard_workloads
    from fedge.runtimes import distributed
    from fedge.runtimes.setup import prepare
    from fedge.runtimes.simulator import Simulation

    workload = {w.name: w for w in standard_workloads()}[workload_name]
    config = experiment(workload, algorithm, rounds, 0, threads)
    placement, rank = None, 0
    if distributed.launched() or os.environ.get("FEDGE_BENCH_DISTRIBUTED"):
        rank, _ = distributed.join()
        placement = distributed.placement(workload.clients)
    setup = prepare(config, lenet_federation(workload, 0))
    sim = Simulation.build(config, algorithm, setup, placement=placement)
    transport = sim.ctx.transport
    if placement is not None:
        torch.distributed.barrier()
    started = time.perf_counter()
    training: list[float] = []  # each round's seconds without its evaluation phase
    while not sim.done:
        round_started, evaluated = time.perf_counter(), sim.timer.seconds["evaluate"]
        sim.step()
        training.append(time.perf_counter() - round_started - (sim.timer.seconds["evaluate"] - evaluated))
    seconds = time.perf_counter() - started
    wire = float(getattr(transport, "seconds", 0.0))
    if placement is not None:
        shares = [None] * placement.world
        torch.distributed.all_gather_object(shares, wire)
        wire = statistics.fmean(shares)
        distributed.leave()
    if rank == 0:
        measured = training[1:] if len(training) > 1 else training  # round 1 (no neighbours yet) is not timed
        result.write_text(json.dumps({"seconds": seconds, "transport_seconds": wire,
                                      "samples": rounds * workload.clients * workload.samples,
                                      "training_samples_per_s": len(measured) * workload.clients * workload.samples
                                      / sum(measured)}))


def contender(kind: str, algorithm: str, rounds: int, out: Path, workload: str) -> dict[str, Any]:
    from fedge.runtimes.device_threads import available_cores

    cores = available_cores()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["-m", "benchmarks.distributed", "--worker", "--algorithm", algorithm, "--rounds", str(rounds),
            "--result", str(out), "--workload", workload]
    if kind == "simulator":
        command = [sys.executable, *base, "--threads", str(cores)]
    else:
        processes = int(kind.split("-")[1])
        env["FEDGE_BENCH_DISTRIBUTED"] = "1"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *base, "--threads", str(max(1, cores // processes))]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=1800)
    measured = json.loads(out.read_text())
    return {"samples_per_s": measured["samples"] / measured["seconds"], "seconds": measured["seconds"],
            "transport_share": measured["transport_seconds"] / measured["seconds"],
            "training_samples_per_s": measured["training_samples_per_s"]}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", action="append", help="algorithms (default fedavg, dfl, dpmn)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workload", default="lenet5-100x600", choices=("lenet5-100x600", "lenet5-500x64"))
    parser.add_argument("--limit", action="store_true", help="also the bare-loop limit in every repeat")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/distributed-DATE.json)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.algorithm[0], args.rounds, args.threads, args.result, args.workload)
        return 0
    from fedge.runfolder import environment

    algorithms = args.algorithm or ["fedavg", "dfl", "dpmn"]
    kinds = ["simulator", "torchrun-1", "torchrun-2"]
    scratch = REPO / "benchmarks" / "results" / ".distributed-scratch.json"
    results: dict[str, dict[str, list[dict[str, Any]]]] = {a: {k: [] for k in kinds} for a in algorithms}
    from benchmarks.bare import bare_limit
    from benchmarks.workloads import standard_workloads
    from fedge.runtimes.device_threads import available_cores

    workload = {w.name: w for w in standard_workloads()}[args.workload]
    limits: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        if args.limit:
            limits.append(bare_limit(workload.clients, workload.samples, 2, 0, available_cores()))
            print("bare-loop limit", limits[-1]["limit"], limits[-1]["limit_configuration"], flush=True)
        for algorithm in algorithms:
            for kind in (kinds if repeat % 2 == 0 else kinds[::-1]):
                results[algorithm][kind].append(contender(kind, algorithm, args.rounds, scratch, args.workload))
                print(algorithm, kind, results[algorithm][kind][-1], flush=True)
    scratch.unlink(missing_ok=True)
    summary = {}
    for algorithm, by_kind in results.items():
        medians = {k: statistics.median(r["samples_per_s"] for r in runs) for k, runs in by_kind.items()}
        summary[algorithm] = {"samples_per_s": medians,
                              "two_processes_vs_simulator": medians["torchrun-2"] / medians["simulator"],
                              "transport_share_two_processes": statistics.median(
                                  r["transport_share"] for r in by_kind["torchrun-2"]),
                              "training_samples_per_s": {k: statistics.median(r["training_samples_per_s"]
                                                                              for r in runs)
                                                         for k, runs in by_kind.items()}}
        if limits:  # each configuration against the limit of the same repeat: min / median / max
            summary[algorithm]["training_vs_limit"] = {
                k: _spread([r["training_samples_per_s"] / lim["limit"] for r, lim in zip(runs, limits)])
                for k, runs in by_kind.items()}
        print(algorithm, summary[algorithm])
    out = args.out or REPO / "benchmarks" / "results" / f"distributed-{datetime.date.today()}.json"
    out.write_text(json.dumps({"benchmark": "distributed", "workload": args.workload, "rounds": args.rounds,
                               "repeats": args.repeats, "environment": environment(), "runs": results,
                               "bare_limit": limits, "summary": summary}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
