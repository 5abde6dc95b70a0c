"""Rerun the DPMN paper's section IV experiments (algorithm comparison, δ study, number of devices) as one
resumable grid over worker processes, and write report.md, results.csv and figures saying whether each of the
paper's claims held. `--studies` adds issue 17's studies (byte-saving decomposition, density, data-scarcity and
label-skew sweeps against local training). Rerunning with the same --out reuses every finished cell."""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

from fedge.config import ConfigError, build
from fedge.output import console, print_table


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fedge.reproduce.grid import PRESETS

    parser.add_argument("--dataset", default="digits", help=f"dataset preset: {', '.join(PRESETS)} (default digits)")
    parser.add_argument("--data-dir", help="folder holding the dataset's files (fmnist, cifar10, emnist)")
    parser.add_argument("--quick", action="store_true",
                        help="15 rounds, 2 seeds, device study on dpmn/dpmn-r/dfl only "
                             "(42 cells on digits, 2-6 CPU-minutes)")
    parser.add_argument("--seeds", type=int, help="seeds per cell, reported as mean ± sd (default 3; --quick 2)")
    parser.add_argument("--workers", type=int, help="worker processes (default: number of CPU cores)")
    parser.add_argument("--out", help="report folder; also holds the cell cache (default runs/reproduce-DATASET)")
    parser.add_argument("--rounds", type=int, help="communication rounds per cell (default: the preset's)")
    parser.add_argument("--deltas", type=_floats, help="δ grid, comma-separated (default 0,0.1,0.2,0.3,0.4,0.5)")
    parser.add_argument("--device-counts", type=_ints, help="device counts, comma-separated (default 10,20,50,100)")
    parser.add_argument("--algorithms", type=_names, help="main comparison algorithms, comma-separated "
                        "(default dpmn,dfl,dpmp,dpcg,dpmn-r,local,fedavg)")
    parser.add_argument("--device-algorithms", type=_names, help="algorithms of the device-count study")
    parser.add_argument("--studies", type=_names,
                        help="studies, comma-separated: main, delta, devices (together: paper, the default), "
                             "decompose, density, scarcity, skew (together: extra), or all; main always runs")
    parser.add_argument("--densities", type=_floats,
                        help="density study: pruning.target_density grid (default 0.25,0.5,0.75,1; --quick 0.25,0.5,1)")
    parser.add_argument("--train-per-device", type=_ints,
                        help="scarcity study: training samples per device, besides all (default 8,16,32)")
    parser.add_argument("--partitions", type=_names,
                        help="skew study: partitions besides the main one (default shards:5,shards:10,dirichlet:0.1,"
                             "dirichlet:0.5,dirichlet:1; --quick shards:5,dirichlet:0.1,dirichlet:1)")
    parser.add_argument("--sweep-algorithms", type=_names,
                        help="algorithms of the scarcity and skew studies; local is always added "
                             "(default dpmn,dpcg; --quick dpmn)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the base experiment config, e.g. --set train.epochs=1 (repeatable)")
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="accept dataset files whose checksums differ from the published ones")
    parser.add_argument("--target", type=float, help="target accuracy for 'MB to target' (0-1 or percent)")
    parser.add_argument("--balance-weight", type=float, default=0.1,
                        help="w in claim (a)'s score: accuracy points − w × traffic %% (default 0.1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _spec(args: argparse.Namespace) -> Any:
    from fedge.reproduce.grid import GridSpec

    raw: dict[str, Any] = {"dataset": args.dataset, "quick": args.quick, "overrides": list(args.overrides)}
    for name in ("data_dir", "seeds", "rounds", "deltas", "device_counts", "algorithms", "device_algorithms",
                 "studies", "densities", "train_per_device", "partitions", "sweep_algorithms"):
        value = getattr(args, name)
        if value is not None:
            raw[name] = value
    if args.no_verify_checksums:
        raw["overrides"].append("data.verify_checksums=false")
    return build(GridSpec, raw)


def _command_line(args: argparse.Namespace) -> str:
    parts = ["fedge", "reproduce", "--dataset", args.dataset]
    for flag in ("data_dir", "seeds", "workers", "out", "rounds", "target"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    for flag in ("deltas", "device_counts", "algorithms", "device_algorithms", "studies", "densities",
                 "train_per_device", "partitions", "sweep_algorithms"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", ",".join(f"{v:g}" if isinstance(v, float) else str(v)
                                                              for v in value)]
    parts += [item for o in args.overrides for item in ("--set", o)]
    parts += [f"--{flag}" for flag in ("quick", "no_verify_checksums") if getattr(args, flag)]
    return shlex.join(p.replace("_", "-") if p.startswith("--") else p for p in parts)


def _machine(workers: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPU cores, {workers} worker(s)"


def main(args: argparse.Namespace) -> int:
    from fedge.reproduce import plots
    from fedge.reproduce.cache import CellCache
    from fedge.reproduce.grid import build_cells
    from fedge.reproduce.pool import default_workers, run_grid
    from fedge.reproduce.report import TABLE_COLUMNS, RunInfo, main_table, write_report
    from fedge.reproduce.results import auto_target, load_records, select, write_csv
    from fedge.reproduce.verdicts import Rules, all_verdicts
    from fedge.runfolder.staging import check_output

    started = time.perf_counter()
    spec = _spec(args)
    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    if not math.isfinite(args.balance_weight) or args.balance_weight < 0:
        raise ConfigError(f"--balance-weight: must be a finite number >= 0, got {args.balance_weight}")
    target = None if args.target is None else (args.target / 100 if args.target > 1 else args.target)
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"--target: {args.target} is not an accuracy in (0, 1] or (0, 100]")
    base, cells = build_cells(spec)
    out = Path(args.out or f"runs/reproduce-{spec.dataset}{'-quick' if spec.quick else ''}")
    check_output(out, "--out")  # a file in the way or an unwritable folder: one line, before any cell runs
    cache = CellCache(out / "cells")
    console.print(f"[bold]fedge reproduce[/]: {len(cells)} cells on {spec.dataset} ({base.data.devices} devices, "
                  f"{base.rounds} rounds, {spec.num_seeds} seed(s)), {workers} worker(s) → {out}")
    stats = run_grid(cells, cache, workers, progress=not args.no_progress)
    records = load_records(cells, cache)
    target = target if target is not None else auto_target(select(records, study="main"))
    rules = Rules(delta=base.neighbours.delta, balance_weight=args.balance_weight)
    verdicts = all_verdicts(records, base.data.devices, rules)
    write_csv(out / "results.csv", records, target)
    subtitle = f"{spec.dataset}, {base.data.devices} devices, {base.rounds} rounds"
    plots.curves(records, out, subtitle)
    plots.delta_study(records, base.data.devices, out, f"{spec.dataset}, {base.rounds} rounds")
    plots.devices_study(records, out, f"{spec.dataset}, δ = {base.neighbours.delta:g}, {base.rounds} rounds")
    info = RunInfo(command=_command_line(args), machine=_machine(workers), dataset=spec.dataset,
                   model=base.train.model, devices=base.data.devices, partition=base.data.partition,
                   rounds=base.rounds, seeds=spec.num_seeds, deltas=list(spec.deltas),
                   device_counts=list(spec.device_counts), cells=stats.total, cached=stats.cached,
                   wall_seconds=time.perf_counter() - started, target_density=base.pruning.target_density,
                   studies=spec.studies_run)
    report = write_report(out, info, records, verdicts, rules, target)
    print_table(f"{spec.dataset}: {base.data.devices} devices, {base.rounds} rounds, mean ± sd over "
                f"{spec.num_seeds} seed(s); target {100 * target:.0f}%", TABLE_COLUMNS, main_table(records, target))
    for verdict in verdicts:
        console.print(f"claim {verdict.title}: [bold]{verdict.status}[/]")
    console.print(f"{stats.computed} cell(s) computed, {stats.cached} reused; report: {report}")
    return 0
