"""Time one fedge simulation of a benchmark workload in this process and print one JSON line (a child of
`benchmarks.revisions`; whichever `fedge` is first on PYTHONPATH is the one measured).

    python -m benchmarks.time_simulate --workload lenet5-500x64 --algorithm dpmn --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import fedge
from benchmarks.workloads import experiment, lenet_federation, standard_workloads
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True)
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transport", help="runtime.transport (code that has one)")
    args = parser.parse_args()
    workload = {w.name: w for w in standard_workloads()}[args.workload]
    config = experiment(workload, args.algorithm, args.rounds, args.seed, args.threads)
    if args.transport:
        config.runtime.transport = args.transport
    setup = prepare(config, lenet_federation(workload, args.seed) if workload.model == "lenet5" else None)
    stamps: list[float] = []
    started = time.perf_counter()
    simulate(config, args.algorithm, None, setup=setup, on_round=lambda _: stamps.append(time.perf_counter()))
    edges = [started, *stamps]
    durations = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    measured = durations[1:]  # round 1 (no neighbours yet, bootstrap probes) is left out, as in benchmarks.run
    samples = int(setup.data.train_sizes.sum())
    print(json.dumps({"fedge": fedge.__file__, "samples_per_s": len(measured) * samples / sum(measured),
                      "round_seconds": durations}))


if __name__ == "__main__":
    main()
