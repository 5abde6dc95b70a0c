"""Per-round phase times of one fedge algorithm on one benchmark workload, next to one bare-loop round.

    python -m benchmarks.round_phases --workload lenet5-500x64 --algorithm dpmn --rounds 5 --threads 2

Shows how a round's cost changes over a run (dpmn: bootstrap round 1, pruning ramp in rounds 2-3, steady state
after), which the aggregate throughput of `benchmarks.run` averages away. A measurement, not a test.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bare import bare_fedavg
from benchmarks.workloads import experiment, lenet_federation, standard_workloads
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="lenet5-500x64")
    parser.add_argument("--algorithm", default="dpmn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = {w.name: w for w in standard_workloads()}
    if args.workload not in names:
        parser.error(f"--workload: {args.workload!r} is not one of {', '.join(names)}")
    workload = names[args.workload]
    config = experiment(workload, args.algorithm, args.rounds, args.seed, args.threads)
    setup = prepare(config, lenet_federation(workload, args.seed) if workload.model == "lenet5" else None)
    samples = int(setup.data.train_sizes.sum())
    if workload.model == "lenet5":
        bare = bare_fedavg(workload.clients, workload.samples, 1, args.seed)
        print(f"bare loop: {bare['seconds']:.2f} s per round, {bare['samples_per_s']:.0f} samples/s")
    summary = simulate(config, args.algorithm, None, setup=setup).summary
    for number, phases in enumerate(summary["phase_seconds_by_round"], 1):
        total = sum(phases.values())
        detail = ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items())
        print(f"round {number}: {total:.2f} s ({samples / total:.0f} samples/s): {detail}")


if __name__ == "__main__":
    main()
