"""Accuracy against the privacy budget: train one algorithm at ε ∈ {∞, 8, 4, 2, 1} (or `--epsilons`) over several
seeds, σ calibrated for each ε, and write a table (sweep.md, sweep.csv, sweep.json) and a plot
(accuracy_vs_epsilon.png). `fedge run` algorithms by default; `--recsys` for `fedge recsys` (fedmf).

    fedge privacy-sweep --algorithm fedavg --mechanism user --seeds 0,1,2 --out runs/dp-fedavg
    fedge privacy-sweep --algorithm dpmn --mechanism dp-sgd --set pruning.tolerance=1 --out runs/dp-dpmn
    fedge privacy-sweep --recsys --config configs/recsys-fedmf.yaml --data-dir DIR --out runs/dp-fedmf
    fedge privacy-sweep --combine runs/dp-fedavg runs/dp-dpmn --out accuracy_vs_epsilon.png
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from fedge.config import ConfigError, apply_overrides, build, load_yaml


def _numbers(text: str, key: str, kind: type = float) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{key}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{key}: give at least one value")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recsys", action="store_true", help="sweep a `fedge recsys` algorithm (default: fedge run)")
    parser.add_argument("--config", type=Path, help="YAML config of the command swept")
    parser.add_argument("--algorithm", help="the algorithm (fedge run: fedavg, hfl, dpmn, ...; recsys: fedmf)")
    parser.add_argument("--mechanism", choices=["user", "dp-sgd", "peer"],
                        help="privacy.mechanism (default: user for fedavg, hfl and recsys; dp-sgd otherwise)")
    parser.add_argument("--epsilons", default="inf,8,4,2,1", help="target ε values; inf = no DP")
    parser.add_argument("--seeds", default="0,1,2", help="seeds, each a separate run per ε")
    parser.add_argument("--data-dir", type=Path, help="dataset folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of the command swept (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/privacy-sweep"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no per-run lines")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="train nothing: draw these finished sweeps in one plot, --out FILE.png")


def main(args: argparse.Namespace) -> int:
    from fedge.output import console
    from fedge.reproduce.privacy_sweep import combine, run_sweep, write

    if args.combine:
        missing = [str(folder) for folder in args.combine if not (folder / "sweep.json").is_file()]
        if missing:
            raise ConfigError(f"--combine: no finished sweep (sweep.json) in {', '.join(missing)}")
        if args.out.suffix != ".png":
            raise ConfigError(f"--out: with --combine, the plot to write (a .png file), got {args.out}")
        combine(args.combine, args.out)
        print(f"wrote {args.out}")
        return 0
    epsilons = _numbers(args.epsilons, "--epsilons")
    if any(math.isnan(e) or e <= 0 for e in epsilons):
        raise ConfigError(f"--epsilons: every ε must be > 0 (inf for no DP), got {args.epsilons}")
    seeds = _numbers(args.seeds, "--seeds", int)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out: {args.out} exists and is not a folder")
    mapping: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if args.recsys:
        config, run_one, quality, name = _recsys(args, mapping)
    else:
        config, run_one, quality, name = _run(args, mapping)
    mechanism = args.mechanism or ("user" if args.recsys or name in ("fedavg", "hfl") else "dp-sgd")

    def report(run: Any) -> None:
        if args.no_progress:
            return
        if run.diverged:
            console.print(f"ε={run.epsilon:g} seed {run.seed}: diverged — {run.diverged}", markup=False)
        else:
            console.print(f"ε={run.epsilon:g} seed {run.seed}: {quality} {run.quality}, σ={run.noise_multiplier}, "
                          f"ε reached {run.achieved_epsilon}")

    runs = run_sweep(config, epsilons, seeds, mechanism, run_one, quality, report)
    title = f"{name} ({mechanism}), {quality} against ε"
    print(write(args.out, runs, quality, title, "fedge " + shlex.join(sys.argv[1:])))
    return 0


def _run(args: argparse.Namespace, mapping: dict[str, Any]) -> tuple[Any, Any, str, str]:
    from fedge.algorithms import ALGORITHMS
    from fedge.experiment import ExperimentConfig
    from fedge.runtimes.setup import prepare
    from fedge.runtimes.simulator import simulate

    if args.algorithm:
        mapping["algorithms"] = [args.algorithm]
    if args.data_dir:
        mapping.setdefault("data", {})["data_dir"] = str(args.data_dir)
    config = build(ExperimentConfig, apply_overrides(mapping, args.overrides))
    if len(config.algorithms) != 1:
        raise ConfigError("--algorithm: sweep one algorithm at a time")
    name = config.algorithms[0]
    ALGORITHMS.check([name], "algorithms")
    setups: dict[int, Any] = {}

    def run_one(variant: Any) -> dict[str, Any]:
        setup = setups.setdefault(variant.seed, prepare(variant))
        return simulate(variant, name, None, setup=setup).summary

    return config, run_one, "accuracy_mean", name


def _recsys(args: argparse.Namespace, mapping: dict[str, Any]) -> tuple[Any, Any, str, str]:
    from fedge.recsys.algorithms import RECSYS_ALGORITHMS
    from fedge.recsys.defaults import recsys_config
    from fedge.recsys.runner import run

    if args.algorithm:
        mapping["algorithm"] = args.algorithm
    if args.data_dir:
        mapping.setdefault("data", {})["data_dir"] = str(args.data_dir)
    mapping["progress"] = False
    config = recsys_config(apply_overrides(mapping, args.overrides))  # the algorithm's tuned defaults underneath
    RECSYS_ALGORITHMS.check([config.algorithm], "algorithm")

    def run_one(variant: Any) -> dict[str, Any]:
        return run(variant, write=False).summary

    return config, run_one, "test_hr@10", config.algorithm  # the best-validation round's test HR@10
