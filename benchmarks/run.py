"""fedge's round throughput against a bare PyTorch loop and Flower's simulation, side by side in one run.

    python -m benchmarks.run [--repeats 3] [--rounds 2] [--client-scale 1.0] [--only lenet5] [--out FILE]
                             [--flower-python PATH | --no-flower] [--threads 1]

For each workload (benchmarks.workloads) and each repeat, the contenders run interleaved (the bare loop's two
configurations, each in fresh processes, then each fedge algorithm, then Flower in a fresh process), so machine load
hits all of them alike; ratios are taken per repeat and reported as min/median/max. The limit of a repeat is the
better of the bare loop's configurations (`benchmarks.bare`). Flower (optional extra `flwr[simulation]`) runs once
per repeat on the LeNet workloads; without it the runner says so and skips it. Evaluation is timed by none of them
(fedge's evaluation phase is subtracted; its share is in the breakdown). Also printed: where a fedge round's time
goes, sequential vs batched local training, peak memory. Results go to a JSON file (default
benchmarks/results/latest.json) with the environment (fedge, torch, CPU model and capability, threads, load).
Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from benchmarks.bare import bare_limit
from benchmarks.measure import (
    fedge_round_throughput,
    flower_python,
    flower_throughput,
    peak_memory_mb,
    reset_peak_memory,
    spread,
    trainer_throughput,
)
from benchmarks.workloads import Workload, experiment, lenet_federation, standard_workloads
from fedge.output import atomic_write_json, console, print_table
from fedge.runfolder import environment
from fedge.runtimes.device_threads import available_cores
from fedge.runtimes.setup import prepare

PHASES = ("train", "prune", "select", "exchange", "combine", "evaluate")


def warm_up(args: argparse.Namespace) -> None:
    """Run every code path once on tiny federations: torch's lazy initialisation and torch.func's first-call
    imports take seconds and must not land in the first measured repeat."""
    for model, samples in (("lenet5", 32), ("mlp", 0)):
        workload = Workload("warm-up", model, 4, samples, ("fedavg", "dfl", "dpmn"))
        config = experiment(workload, "fedavg", 2, args.seed, args.threads)
        setup = prepare(config, lenet_federation(workload, args.seed) if model == "lenet5" else None)
        for algorithm in workload.algorithms:
            fedge_round_throughput(workload, algorithm, setup, 2, args.seed, args.threads, args.batched)
        trainer_throughput(setup, workload, args.seed, args.threads)


def run_workload(workload: Workload, args: argparse.Namespace, flower: str | None) -> dict[str, Any]:
    reset_peak_memory()
    started = time.perf_counter()
    config = experiment(workload, workload.algorithms[0], args.rounds, args.seed, args.threads)
    data = lenet_federation(workload, args.seed) if workload.model == "lenet5" else None
    setup = prepare(config, data)
    samples = int(setup.data.train_sizes.sum())
    console.print(f"[bold]{workload.name}[/]: {workload.clients} devices, {samples} training samples per round "
                  f"({workload.data_label}), setup {time.perf_counter() - started:.1f} s")
    runs: dict[str, list[float]] = {}
    phases: dict[str, dict[str, float]] = {}  # the measured rounds (2..)
    first_round: dict[str, dict[str, float]] = {}  # round 1 (bootstrap probes, no neighbours yet), not measured
    trainer_kind: dict[str, str] = {}
    repeats = 1 if workload.clients > 5000 else args.repeats
    flower_runs: list[dict[str, Any]] = []
    bare_runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        if "bare" in workload.baselines:
            bare_runs.append(bare_limit(workload.clients, workload.samples, args.bare_rounds, args.seed, args.cores))
            runs.setdefault("bare-limit", []).append(bare_runs[-1]["limit"])
            for name, measured in bare_runs[-1]["configurations"].items():
                runs.setdefault(f"bare {name}", []).append(measured["samples_per_s"])
        for algorithm in workload.algorithms:
            result = fedge_round_throughput(workload, algorithm, setup, args.rounds, args.seed, args.threads,
                                            args.batched)
            runs.setdefault(f"fedge-{algorithm}", []).append(result["samples_per_s"])
            trainer_kind[algorithm] = result["trainer"]
            total = phases.setdefault(algorithm, dict.fromkeys(PHASES, 0.0))
            for phase, seconds in result["phase_seconds"].items():
                total[phase] = total.get(phase, 0.0) + seconds
            first = first_round.setdefault(algorithm, dict.fromkeys(PHASES, 0.0))
            for phase, seconds in result["first_round_phase_seconds"].items():
                first[phase] = first.get(phase, 0.0) + seconds
        if "flower" in workload.baselines and flower is not None and not args.no_flower:
            flower_runs.append(flower_throughput(flower, workload, args.flower_rounds, args.seed, args.flower_timeout))
    out: dict[str, Any] = {"workload": workload.name, "model": workload.model, "devices": workload.clients,
                           "samples_per_round": samples, "data": workload.data_label, "repeats": repeats,
                           "samples_per_s": {name: spread(values) for name, values in runs.items()},
                           "trainer": trainer_kind}
    if bare_runs:
        out["bare"] = bare_runs
        out["ratio_to_limit"] = {algorithm: spread([f / b for f, b in zip(runs[f"fedge-{algorithm}"],
                                                                          runs["bare-limit"])])
                                 for algorithm in workload.algorithms}
    out["breakdown"] = {algorithm: {phase: seconds / max(sum(total.values()), 1e-12)
                                    for phase, seconds in total.items()} for algorithm, total in phases.items()}
    out["first_round_breakdown"] = {algorithm: {phase: seconds / max(sum(total.values()), 1e-12)
                                                for phase, seconds in total.items()}
                                    for algorithm, total in first_round.items()}
    if workload.clients <= 5000 and not args.no_trainer_comparison:
        pairs = [trainer_throughput(setup, workload, args.seed, args.threads) for _ in range(repeats)]
        out["trainer_samples_per_s"] = {k: spread([p[k] for p in pairs]) for k in ("sequential", "batched")}
        out["batched_speedup"] = spread([p["batched"] / p["sequential"] for p in pairs])
    if "flower" in workload.baselines:
        if args.no_flower:
            out["flower"] = {"skipped": "--no-flower"}
        elif flower is None:
            out["flower"] = {"skipped": "flwr[simulation] is not importable (pip install 'fedge[flower]' or pass "
                                        "--flower-python)"}
        else:
            out["flower"] = {"runs": flower_runs}
            measured = [r["samples_per_s"] for r in flower_runs if "samples_per_s" in r]
            if flower_runs and len(measured) == len(flower_runs):
                out["flower"]["samples_per_s"] = spread(measured)
                out["ratio_to_flower"] = {a: spread([f / w for f, w in zip(runs[f"fedge-{a}"], measured)])
                                          for a in workload.algorithms}
            else:
                out["flower"]["error"] = "; ".join(r["error"] for r in flower_runs if "error" in r) or "no run"
    out["peak_memory_mb"] = peak_memory_mb()
    out["selection_mixing_fraction"] = {a: b["select"] + b["exchange"] + b["combine"]
                                        for a, b in out["breakdown"].items()}
    return out


def report(result: dict[str, Any]) -> None:
    name = result["workload"]
    rows = [[who, s["min"], s["median"], s["max"]] for who, s in result["samples_per_s"].items()]
    if "flower" in result and "samples_per_s" in result["flower"]:
        s = result["flower"]["samples_per_s"]
        rows.append(["flower", s["min"], s["median"], s["max"]])
    print_table(f"{name}: training samples/s", ["contender", "min", "median", "max"], rows)
    for key, label in (("ratio_to_limit", "fedge / bare-loop limit"), ("ratio_to_flower", "fedge / Flower")):
        if key in result:
            print_table(f"{name}: {label} (per repeat)", ["algorithm", "min", "median", "max"],
                        [[a, s["min"], s["median"], s["max"]] for a, s in result[key].items()])
    if "flower" in result and "ratio_to_flower" not in result:
        console.print("[yellow]Flower: " + escape(str(result["flower"].get("skipped") or result["flower"].get("error")))
                      + "[/]")
    print_table(f"{name}: where a round's time goes (fraction)", ["algorithm", *PHASES],
                [[a, *[b.get(p, 0.0) for p in PHASES]] for a, b in result["breakdown"].items()])
    if "batched_speedup" in result:
        t, s = result["trainer_samples_per_s"], result["batched_speedup"]
        console.print(f"local training samples/s: sequential {t['sequential']['median']:.0f}, batched "
                      f"{t['batched']['median']:.0f}; speedup min/median/max {s['min']:.2f}/{s['median']:.2f}/"
                      f"{s['max']:.2f}")
    console.print(f"peak memory {result['peak_memory_mb']:.0f} MB; selection+mixing share: "
                  + ", ".join(f"{a} {v:.1%}" for a, v in result["selection_mixing_fraction"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5,
                        help="fedge rounds per repeat; the first is not timed (dpmn: rounds 2-3 still ramp pruning up, "
                             "4-5 are steady state)")
    parser.add_argument("--client-scale", type=float, default=1.0, help="shrink the workloads (smoke/quick runs)")
    parser.add_argument("--only", action="append", default=[],
                        help="run this workload (exact name, else all names containing it)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="fedge's train.threads and torch intra-op threads (default: every core)")
    parser.add_argument("--cores", type=int, default=available_cores(),
                        help="cores the bare-loop limit may use (1 process x cores threads, cores processes x 1)")
    parser.add_argument("--bare-rounds", type=int, default=2, help="timed bare-loop rounds (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batched", choices=("auto", "on", "off"), default="auto", help="fedge's train.batched")
    parser.add_argument("--no-trainer-comparison", action="store_true",
                        help="skip timing sequential vs batched local training alone")
    parser.add_argument("--flower-python", help="a Python with flwr[simulation] (default: this one)")
    parser.add_argument("--no-flower", action="store_true")
    parser.add_argument("--flower-rounds", type=int, default=3)
    parser.add_argument("--flower-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    available = standard_workloads(args.client_scale)
    names = {w.name for w in available}
    workloads = [w for w in available if not args.only
                 or any(key == w.name or (key not in names and key in w.name) for key in args.only)]
    flower = None if args.no_flower else flower_python(args.flower_python)
    if flower is None and not args.no_flower:
        console.print(escape("Flower is not installed here (optional extra flwr[simulation]): skipping it."))
    load_at_start = os.getloadavg()
    warm_up(args)
    results = []
    for workload in workloads:
        results.append(run_workload(workload, args, flower))
        report(results[-1])
        atomic_write_json(args.out, {
            "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else os.sys.argv[1:]),
            "environment": {**environment(), "threads": args.threads, "cores_for_the_limit": args.cores,
                            "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
            "results": results,
        })
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
