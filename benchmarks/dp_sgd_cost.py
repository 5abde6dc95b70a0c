"""What record-level DP-SGD costs: one local epoch of DP-SGD against one without DP, on the same devices.

    python -m benchmarks.dp_sgd_cost --repeats 5

Workloads: LeNet-5 on the offline digits default (20 devices, the sequential trainer on device threads), the MLP on
Synthetic (100 devices, the batched trainer), and LeNet-5 on 28x28 inputs (20 devices x 600, batch 32: the scale of
Opacus's MNIST figure), each with the trainer and intra-op threads a run would use (`make_trainer`, `run_threads`).
The issue's target is a DP-SGD step at most 1.6x a plain step (Opacus's own CPU ratio on MNIST). Per repeat both
are timed back to back in alternating order; the ratio is per step (DP-SGD's step count, `dp_sgd_schedule`, can be
one less per epoch than the plain one). Wall-clock is the measure; the process's CPU time is recorded too
(`cpu_step_ratio`, less sensitive to other jobs on a shared machine), and the 1-minute load average before and after
(`load_average_1min`). `--torch-func` adds the LeNet-5 workloads with per-sample gradients from
`torch.func.vmap` instead of the layer hooks, the approach the hooks replaced. `--floors` also times, per workload,
the two parts of a DP-SGD epoch that only draw random numbers — every device-step's Gaussian noise (`Noise`, as the
trainers draw it) and the round's Poisson plan (`poisson_plan`) — alone, as fractions of a plain epoch (`floors`):
a DP-SGD step cannot cost less than 1 + their sum of a plain one. A measurement, not a test; results go to
benchmarks/results/ with the machine (`fedge.runfolder.environment()`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from benchmarks.measure import save_report
from benchmarks.workloads import Workload, experiment, lenet_federation
from fedge.config import build
from fedge.core.privacy import Noise
from fedge.core.streams import Streams
from fedge.experiment import ExperimentConfig
from fedge.runfolder import environment
from fedge.runtimes import dp_sgd
from fedge.runtimes.batches import batch_plan, poisson_plan
from fedge.runtimes.device_threads import intra_op_threads
from fedge.runtimes.dp_sgd import DPSGD, dp_sgd_schedule
from fedge.runtimes.setup import Setup, prepare
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer, make_trainer, run_threads

RESULTS = Path(__file__).resolve().parent / "results"


def digits(seed: int) -> tuple[ExperimentConfig, Setup]:
    """The offline default: LeNet-5 on the 8x8 digits, 20 devices, batch 16."""
    config = build(ExperimentConfig, {"seed": seed, "train": {"epochs": 1}})
    return config, prepare(config)


def synthetic(seed: int) -> tuple[ExperimentConfig, Setup]:
    """The MLP on FedProx's Synthetic(1, 1), 100 devices (heavy-tailed sizes), batch 16."""
    config = build(ExperimentConfig, {"seed": seed, "data": {"dataset": "synthetic", "devices": 100},
                                      "train": {"model": "mlp", "epochs": 1}})
    return config, prepare(config)


def mnist_shaped(seed: int) -> tuple[ExperimentConfig, Setup]:
    """LeNet-5 on 28x28 inputs (benchmarks.workloads, synthetic MNIST-shaped), 20 devices x 600 samples, batch 32:
    the scale of Opacus's MNIST reference."""
    workload = Workload("lenet5-20x600", "lenet5", 20, 600, ("fedavg",))
    config = experiment(workload, "fedavg", 1, seed, 0)
    return config, prepare(config, lenet_federation(workload, seed))


WORKLOADS: dict[str, Callable[[int], tuple[ExperimentConfig, Setup]]] = {
    "lenet5-digits-20": digits, "mlp-synthetic-100": synthetic, "lenet5-28x28-20x600": mnist_shaped}


def epoch_seconds(trainer: SequentialTrainer | BatchedTrainer, setup: Setup, dp: DPSGD | None,
                  seed: int) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one local epoch of every device from x0 (dense masks, no penalty,
    no momentum)."""
    n = len(setup.data.devices)
    bank = setup.initial.expand(n, -1).clone()
    masks = torch.ones_like(bank, dtype=torch.bool)
    generators = Streams(seed).device_generators("train", torch.arange(n), 1)
    started, cpu = time.perf_counter(), time.process_time()
    trainer.train_all(bank, masks, None, torch.arange(n), None, generators, dp=dp)
    return time.perf_counter() - started, time.process_time() - cpu


def floors(name: str, dp: DPSGD, repeats: int, seed: int, threads: int = 0) -> dict[str, Any]:
    """CPU seconds of one epoch's noise draws alone and of its Poisson plan alone, against a plain epoch (medians over
    alternating repeats, and their ratios)."""
    config, setup = WORKLOADS[name](seed)
    config.train.threads = threads or config.train.threads
    trainer = make_trainer(setup.model, setup.data.devices, config.train)
    sizes = [len(d.y_train) for d in setup.data.devices]
    rates, steps = dp_sgd_schedule(sizes, 1, config.train.batch_size)
    n = len(sizes)

    def noise() -> float:
        generators, rows = Streams(seed).device_generators("train", torch.arange(n), 1), Noise(setup.model.slices, 1)
        cpu = time.process_time()
        for generator, count in zip(generators, steps.tolist(), strict=True):
            for _ in range(count):
                rows.draw(0, dp.std, generator)
        return time.process_time() - cpu

    def plan() -> float:
        generators = Streams(seed).device_generators("train", torch.arange(n), 1)
        cpu = time.process_time()
        poisson_plan(sizes, steps.tolist(), rates.tolist(), generators)
        return time.process_time() - cpu

    parts: dict[str, Callable[[], float]] = {"plain": lambda: epoch_seconds(trainer, setup, None, seed)[1],
                                             "noise": noise, "poisson_plan": plan}
    times: dict[str, list[float]] = {k: [] for k in parts}
    with intra_op_threads(run_threads(setup.model, config.train)):
        for f in parts.values():
            f()
        for _ in range(repeats):
            for k, f in parts.items():
                times[k].append(f())
    plain = statistics.median(times["plain"])
    return {"workload": name, "epoch_cpu_seconds": times,
            "of_plain_epoch": {k: statistics.median(v) / plain for k, v in times.items() if k != "plain"}}


def measure(name: str, dp: DPSGD, repeats: int, seed: int, functional: bool, threads: int = 0) -> dict[str, Any]:
    config, setup = WORKLOADS[name](seed)
    config.train.threads = threads or config.train.threads
    trainer = make_trainer(setup.model, setup.data.devices, config.train)
    sizes = [len(d.y_train) for d in setup.data.devices]
    plain_steps = int(batch_plan(sizes, 1, config.train.batch_size,
                                 Streams(seed).device_generators("train", torch.arange(len(sizes)), 1)).steps.sum())
    dp_steps = int(dp_sgd_schedule(sizes, 1, config.train.batch_size)[1].sum())
    patch = mock.patch.object(dp_sgd, "taps_cover", lambda _model: False) if functional else None
    plain, private, plain_cpu, private_cpu = [], [], [], []
    with intra_op_threads(run_threads(setup.model, config.train)):
        if patch is not None:
            patch.start()
        try:
            epoch_seconds(trainer, setup, dp, seed)  # warm-up: first calls, allocator, vmap tracing
            epoch_seconds(trainer, setup, None, seed)
            for repeat in range(repeats):
                for which in ((None, dp) if repeat % 2 == 0 else (dp, None)):
                    wall, cpu = epoch_seconds(trainer, setup, which, seed + repeat)
                    (plain if which is None else private).append(wall)
                    (plain_cpu if which is None else private_cpu).append(cpu)
        finally:
            if patch is not None:
                patch.stop()
    ratios = [(p / dp_steps) / (q / plain_steps) for p, q in zip(private, plain, strict=True)]
    cpu_ratios = [(p / dp_steps) / (q / plain_steps) for p, q in zip(private_cpu, plain_cpu, strict=True)]
    return {
        "workload": name + ("-torch.func" if functional else ""),
        "trainer": type(trainer).__name__, "train_threads": config.train.threads,
        "devices": len(sizes), "samples": sum(sizes), "batch_size": config.train.batch_size,
        "steps": {"plain": plain_steps, "dp_sgd": dp_steps},
        "epoch_seconds": {"plain": plain, "dp_sgd": private},
        "median_epoch_seconds": {"plain": statistics.median(plain), "dp_sgd": statistics.median(private)},
        "step_ratio": {"per_repeat": ratios, "median": statistics.median(ratios), "min": min(ratios),
                       "max": max(ratios), "of_fastest": (min(private) / dp_steps) / (min(plain) / plain_steps)},
        "epoch_cpu_seconds": {"plain": plain_cpu, "dp_sgd": private_cpu},
        "cpu_step_ratio": {"per_repeat": cpu_ratios, "median": statistics.median(cpu_ratios), "min": min(cpu_ratios),
                           "max": max(cpu_ratios)},
    }


def dp_parser(description: str) -> argparse.ArgumentParser:
    """The options the DP-SGD cost benchmarks share: repeats, seed, σ and C."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = dp_parser(__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS), help="run only these workloads")
    parser.add_argument("--threads", type=int, default=0, help="train.threads (0: as a run, every core)")
    parser.add_argument("--torch-func", action="store_true", help="also LeNet-5 with vmap per-sample gradients")
    parser.add_argument("--floors", action="store_true", help="also time the noise draws and the Poisson plan alone")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/dp-sgd-cost-DATE.json)")
    args = parser.parse_args(argv)
    dp = DPSGD(args.noise_multiplier, args.max_grad_norm)
    results = []
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []  # other jobs on the machine, before and after
    for name in args.only or list(WORKLOADS):
        runs = [False, True] if args.torch_func and name.startswith("lenet5") else [False]
        for functional in runs:
            result = measure(name, dp, args.repeats, args.seed, functional, args.threads)
            results.append(result)
            med = result["median_epoch_seconds"]
            ratio = result["step_ratio"]
            print(f"{result['workload']} ({result['trainer']}): plain {med['plain']:.3f} s, DP-SGD "
                  f"{med['dp_sgd']:.3f} s per epoch; DP-SGD step / plain step {ratio['median']:.2f}x "
                  f"(min {ratio['min']:.2f}, max {ratio['max']:.2f}, fastest epochs {ratio['of_fastest']:.2f}; "
                  f"target <= 1.6); CPU time {result['cpu_step_ratio']['median']:.2f}x", flush=True)
    floor_results = []
    for name in (args.only or list(WORKLOADS)) if args.floors else []:
        floor = floors(name, dp, args.repeats, args.seed, args.threads)
        floor_results.append(floor)
        share = floor["of_plain_epoch"]
        print(f"{name}: alone, the noise draws cost {share['noise']:.2f} of a plain epoch's CPU time and the Poisson "
              f"plan {share['poisson_plan']:.2f}: DP-SGD >= {1 + share['noise'] + share['poisson_plan']:.2f}x",
              flush=True)
    load += [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    report = {"benchmark": "dp_sgd_cost", "dp": {"noise_multiplier": dp.noise_multiplier,
                                                   "max_grad_norm": dp.max_grad_norm},
              "repeats": args.repeats, "results": results, "floors": floor_results,
              "environment": environment(), "load_average_1min": load,
              "date": datetime.date.today().isoformat()}
    suffix = f"-threads{args.threads}" if args.threads else ""
    save_report(report, args.out or RESULTS / f"dp-sgd-cost{suffix}-{report['date']}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
