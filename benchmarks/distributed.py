"""Throughput of `fedge run` over processes against the in-process simulator, side by side in one invocation.

    python -m benchmarks.distributed --rounds 3 --repeats 2

For LeNet-5 on 100 devices × 600 synthetic samples (`benchmarks.workloads`, throughput only), each algorithm runs:
the threaded in-process simulator (one process, `train.threads` = every core), then torchrun with 1 and with 2
processes (one device thread each: cores / processes). Each contender is a fresh process (or set of processes),
alternating in every repeat. Reported: training samples per second (rounds × samples a round / wall seconds of the
rounds, evaluation included, start-up excluded) and, for the distributed runs, the share of round time the ranks
spent inside the torch.distributed transport (encoding, swapping, decoding). Results go to
benchmarks/results/distributed-DATE.json with the machine (`fedge.runfolder.environment()`).

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


def worker(algorithm: str, rounds: int, threads: int, result: Path) -> None:
    """Run `rounds` rounds of `algorithm` on the workload in this process (distributed when launched by torchrun)."""
    import torch

    from benchmarks.workloads import Workload, experiment, lenet_federation
    from fedge.runtimes import distributed
    from fedge.runtimes.setup import prepare
    from fedge.runtimes.simulator import Simulation

    workload = Workload("lenet5-100x600", "lenet5", 100, 600, (algorithm,))
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
    while not sim.done:
        sim.step()
    seconds = time.perf_counter() - started
    wire = float(getattr(transport, "seconds", 0.0))
    if placement is not None:
        shares = [None] * placement.world
        torch.distributed.all_gather_object(shares, wire)
        wire = statistics.fmean(shares)
        distributed.leave()
    if rank == 0:
        result.write_text(json.dumps({"seconds": seconds, "transport_seconds": wire,
                                      "samples": rounds * workload.clients * workload.samples}))


def contender(kind: str, algorithm: str, rounds: int, out: Path) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["-m", "benchmarks.distributed", "--worker", "--algorithm", algorithm, "--rounds", str(rounds),
            "--result", str(out)]
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
            "transport_share": measured["transport_seconds"] / measured["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", action="append", help="algorithms (default fedavg, dfl, dpmn)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/distributed-DATE.json)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.algorithm[0], args.rounds, args.threads, args.result)
        return 0
    from fedge.runfolder import environment

    algorithms = args.algorithm or ["fedavg", "dfl", "dpmn"]
    kinds = ["simulator", "torchrun-1", "torchrun-2"]
    scratch = REPO / "benchmarks" / "results" / ".distributed-scratch.json"
    results: dict[str, dict[str, list[dict[str, Any]]]] = {a: {k: [] for k in kinds} for a in algorithms}
    for repeat in range(args.repeats):
        for algorithm in algorithms:
            for kind in (kinds if repeat % 2 == 0 else kinds[::-1]):
                results[algorithm][kind].append(contender(kind, algorithm, args.rounds, scratch))
                print(algorithm, kind, results[algorithm][kind][-1], flush=True)
    scratch.unlink(missing_ok=True)
    summary = {}
    for algorithm, by_kind in results.items():
        medians = {k: statistics.median(r["samples_per_s"] for r in runs) for k, runs in by_kind.items()}
        summary[algorithm] = {"samples_per_s": medians,
                              "two_processes_vs_simulator": medians["torchrun-2"] / medians["simulator"],
                              "transport_share_two_processes": statistics.median(
                                  r["transport_share"] for r in by_kind["torchrun-2"])}
        print(algorithm, summary[algorithm])
    out = args.out or REPO / "benchmarks" / "results" / f"distributed-{datetime.date.today()}.json"
    out.write_text(json.dumps({"benchmark": "distributed", "workload": "lenet5-100x600", "rounds": args.rounds,
                               "repeats": args.repeats, "environment": environment(), "runs": results,
                               "summary": summary}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
