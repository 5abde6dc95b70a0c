"""Train decentralized personalized FL: DPMN and its baselines. With no arguments: DPMN against DFL on the offline
digits default (20 devices, 2 label shards each), printing personalized accuracy and MB transferred.

Writes OUT/<algorithm>/ (metrics.jsonl, neighbours.jsonl, summary.json, config.yaml, checkpoint.pt) and
OUT/comparison.json last. A rerun into a folder that holds a run replaces it only once it has finished
(`fedge.runfolder.staging`); a model that diverges stops the run with a one-line error and FAILED in the folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedge.config import ConfigError, apply_overrides, build, load_yaml, set_path
from fedge.experiment import ExperimentConfig
from fedge.output import atomic_write_json, console, print_table, progress_bar
from fedge.runfolder import FAILED, SUMMARY, RunResult

FLAG_KEYS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "devices": "data.devices",
    "partition": "data.partition",
    "rounds": "rounds",
    "seed": "seed",
    "out": "out",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set regularizer.lam=2 (repeatable)")
    parser.add_argument("--algorithm", action="append", metavar="NAME",
                        help="algorithm(s) to run: dpmn, dfl, dpmp, dpcg, dpmn-r, local, fedavg, hfl (repeatable or "
                             "comma-separated)")
    parser.add_argument("--dataset", help="digits, synthetic, mnist, fmnist, emnist, cifar10, imagenet")
    parser.add_argument("--data-dir", help="folder holding the dataset's files")
    parser.add_argument("--devices", type=int, help="number of devices N")
    parser.add_argument("--partition", help="iid, dirichlet:ALPHA or shards:C")
    parser.add_argument("--rounds", type=int, help="communication rounds")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--out", help="output folder (default runs/latest)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--checkpoint-every", type=int, metavar="K",
                        help="write OUT/<algorithm>/checkpoint.pt every K rounds (and after the last)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue the run in DIR from its checkpoints (with no config flags: the config "
                             "stored in them; with flags: they must give the same config); refused when DIR's "
                             "newest results do not come from its checkpoints")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """defaults ← YAML preset ← flags ← --set, validated strictly."""
    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            set_path(raw, key, value)
    if args.algorithm:
        raw["algorithms"] = [name.strip() for item in args.algorithm for name in item.split(",") if name.strip()]
    apply_overrides(raw, args.overrides)
    return build(ExperimentConfig, raw)


def _has_config_flags(args: argparse.Namespace) -> bool:
    return bool(args.config or args.overrides or args.algorithm) or any(
        getattr(args, flag, None) is not None for flag in FLAG_KEYS if flag != "out")


def resume_config(args: argparse.Namespace) -> tuple[ExperimentConfig, int]:
    """The config and checkpoint interval for `--resume DIR`, every checkpoint in DIR verified before anything runs:
    its file, its config, and that the folder's newest results are its own (a later run's summary is never
    overwritten with an older checkpoint)."""
    from fedge.runtimes import checkpoint

    folder = Path(args.resume)
    if not folder.is_dir():
        raise ConfigError(f"--resume: {folder} is not a folder")
    if args.out is not None and Path(args.out) != folder:
        raise ConfigError(f"--resume {folder} and --out {args.out} disagree; give one of them")
    found = sorted(folder.glob(f"*/{checkpoint.FILENAME}"))
    if not found:
        raise ConfigError(f"--resume: no checkpoint in {folder} (was it run with --checkpoint-every?)")
    if _has_config_flags(args):
        config = resolve_config(args)
    else:
        config = build(ExperimentConfig, checkpoint.load(found[0]).config)
    config.out = str(folder)
    every = 0
    for name in config.algorithms:
        sub = folder / name
        path = sub / checkpoint.FILENAME
        if path.exists():
            saved = checkpoint.load(path, config, name)
            checkpoint.verify(sub, saved)
            every = max(every, saved.checkpoint_every)
        elif (sub / SUMMARY).exists() or (sub / FAILED).exists():
            raise ConfigError(f"--resume: {sub} holds a finished run without a checkpoint; resuming would start "
                              f"{name} over it; rerun without --resume (with a new --out)")
    return config, args.checkpoint_every if args.checkpoint_every is not None else every


def _percent(value: object) -> str:
    return f"{100 * value:.2f}" if isinstance(value, float) else "-"


def print_results(config: ExperimentConfig, results: list[dict[str, Any]]) -> None:
    """The comparison table: accuracy, traffic and (when simulated) time of every algorithm."""
    reference = next((r for r in results if r["algorithm"] == "dfl"), None)
    tiers = any(r.get("bytes_backhaul_total") or r.get("bytes_edge_total") for r in results)
    timed = config.latency.enabled
    rows = []
    for r in results:
        mb = r["bytes_total"] / 1e6
        saving = ("" if reference is None or reference["bytes_total"] == 0
                  else f"{100 * (1 - r['bytes_total'] / reference['bytes_total']):.1f}%")
        rows.append([r["algorithm"], _percent(r["accuracy_mean"]), _percent(r["accuracy_p10"]),
                     f"{mb:.2f}", saving, f"{r['neighbours_mean']:.2f}", f"{r['density_mean']:.3f}",
                     f"{r['seconds']:.1f}"])
        if tiers:
            rows[-1][4:4] = [f"{r['bytes_backhaul_total'] / 1e6:.2f}", f"{r['bytes_edge_total'] / 1e6:.2f}"]
        if timed:
            rows[-1].insert(-1, f"{r['time_total']:.1f}")
    columns = ["algorithm", "accuracy %", "p10 accuracy %", "MB sent", "saving vs dfl", "neighbours", "density",
               "seconds"]
    if tiers:
        columns[4:4] = ["backhaul MB", "edge MB"]
    if timed:
        columns.insert(-1, "simulated s")
    print_table(f"Personalized accuracy after {config.rounds} rounds ({config.data.dataset}, "
                f"{config.data.devices} devices, {config.data.partition})", columns, rows)


def main(args: argparse.Namespace) -> int:
    from fedge.algorithms import ALGORITHMS, create
    from fedge.runfolder.staging import attempt
    from fedge.runtimes import distributed
    from fedge.runtimes.privacy import prepare_privacy
    from fedge.runtimes.setup import prepare
    from fedge.runtimes.simulator import simulate

    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every: must be >= 0, got {args.checkpoint_every}")
    if distributed.launched():
        config = resolve_config(args)
        ALGORITHMS.check(config.algorithms, "algorithms")
        return _run_distributed(args, config, args.checkpoint_every or 0)
    if args.resume:
        config, checkpoint_every = resume_config(args)
    else:
        config, checkpoint_every = resolve_config(args), args.checkpoint_every or 0
    ALGORITHMS.check(config.algorithms, "algorithms")
    out = Path(config.out)
    with attempt(out, "out", resume=bool(args.resume)) as place:  # output problems surface before any data loads
        for stale in ("comparison.json", FAILED):  # a resumed run is unfinished until it ends
            (place.path / stale).unlink(missing_ok=True)
        setup = prepare(config)
        for name in config.algorithms:  # a privacy setting an algorithm cannot use fails before anything runs
            prepare_privacy(config, name, setup.data.train_sizes, lambda c, name=name: create(name, c))
        console.print(f"[bold]fedge run[/]: {', '.join(config.algorithms)} on {config.data.dataset} "
                      f"({config.data.devices} devices, {config.data.partition}, {config.rounds} rounds, "
                      f"model {config.train.model} with {setup.model.dim:,} parameters) → {out}")
        results: list[RunResult] = []
        with progress_bar("rounds", total=config.rounds * len(config.algorithms),
                          enabled=not args.no_progress) as adv:
            for name in config.algorithms:
                def on_round(metrics: dict[str, Any], name: str = name) -> None:
                    acc = metrics.get("accuracy_mean")
                    adv(status=f"{name} acc={acc:.3f}" if isinstance(acc, float) else name)

                results.append(simulate(config, name, place.path / name, setup=setup, on_round=on_round,
                                        checkpoint_every=checkpoint_every, resume=bool(args.resume)))
        atomic_write_json(place.path / "comparison.json", {
            "results": [{k: v for k, v in r.summary.items() if k != "config"} for r in results]})
    print_results(config, [r.summary for r in results])
    return 0


def _run_distributed(args: argparse.Namespace, config: ExperimentConfig, checkpoint_every: int) -> int:
    """`fedge run` as one of the processes torchrun started (fedge.runtimes.distributed): every process runs the
    same rounds for its block of devices; rank 0 writes the run folder and prints, the others stay quiet."""
    import contextlib
    import os

    from fedge.config import to_dict
    from fedge.runfolder.staging import attempt
    from fedge.runtimes import distributed
    from fedge.runtimes.setup import prepare
    from fedge.runtimes.simulator import simulate

    if args.resume:
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise ConfigError(f"--resume {args.resume} and --out {args.out} disagree; give one of them")
        config.out = args.resume
    # torchrun restarts every process after one failed (--max-restarts): they resume from the last complete
    # checkpoint, in place
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    resume = bool(args.resume) or (restarted and checkpoint_every > 0)
    if args.resume and not Path(args.resume).is_dir():
        raise ConfigError(f"--resume: {args.resume} is not a folder")
    if config.secure.aggregation != "none":
        raise ConfigError(f"secure.aggregation: {config.secure.aggregation} is not yet available for runs over "
                          "several processes")
    with distributed.session(to_dict(config)) as (rank, world):
        with distributed.first_says_it(rank):
            placement = distributed.placement(config.data.devices)
        lead = rank == 0
        out = Path(config.out)
        if lead and checkpoint_every and not resume and out.exists() and any(out.iterdir()):
            raise ConfigError(f"--out: {out} is not empty; a run over several processes that checkpoints starts in "
                              "a fresh folder (its processes write their checkpoints there, also on other machines)")
        staged = attempt(out, "out", resume=resume) if lead else contextlib.nullcontext(None)
        with staged as place:
            setup = prepare(config)
            if lead:
                console.print(f"[bold]fedge run[/]: {', '.join(config.algorithms)} on {config.data.dataset} "
                              f"({config.data.devices} devices over {world} processes, {config.rounds} rounds) → {out}")
            results: list[RunResult] = []
            with progress_bar("rounds", total=config.rounds * len(config.algorithms),
                              enabled=lead and not args.no_progress) as adv:
                for name in config.algorithms:
                    results.append(simulate(config, name, place.path / name if lead else None, setup=setup,
                                            on_round=lambda metrics: adv(), placement=placement,
                                            checkpoint_every=checkpoint_every, resume=resume, shard_dir=out / name))
            if lead:
                atomic_write_json(place.path / "comparison.json", {
                    "results": [{k: v for k, v in r.summary.items() if k != "config"} for r in results]})
        if lead:
            print_results(config, [r.summary for r in results])
    return 0
