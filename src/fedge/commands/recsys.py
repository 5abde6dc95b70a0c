"""Federated recommendation on MovieLens: fedmf, fedncf, fedmeta, decentralized (dfedmf, dfedncf) and the
centralized references (central-mf, central-neumf), under the implicit (HR@10, NDCG@10) or explicit (RMSE)
protocol. Each algorithm's defaults are its tuned settings (`fedge.recsys.defaults`); the reported round is the one
with the best validation metric, and test metrics are only measured. Every exchange crosses a transport (`--set
runtime.transport=loopback` encodes each message to bytes). Writes metrics.jsonl, summary.json, config.yaml,
item_embeddings.pt and topk.json to the output folder; a rerun into a folder that holds a run replaces it only once it
has finished (`fedge.runfolder.staging`). `--checkpoint-every K` and `--resume DIR` checkpoint and continue a run as
`fedge run` does. `--set privacy.mechanism=user` trains fedmf or fedncf with user-level DP-FedAvg and reports ε
(docs/recsys.md, "Differential privacy")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedge.config import ConfigError, apply_overrides, build, load_yaml
from fedge.output import console, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (e.g. configs/recsys-fedmf.yaml)")
    parser.add_argument("--dataset", choices=["ml-latest-small", "ml-100k", "ml-1m"], help="MovieLens variant")
    parser.add_argument("--data-dir", type=Path, help="folder holding the ratings file (ratings.csv, u.data, ...)")
    parser.add_argument("--download", action="store_true", help="download the dataset into --data-dir if absent")
    parser.add_argument("--algorithm", help="fedmf, fedncf, fedmeta, dfedmf, dfedncf, central-mf, central-neumf")
    parser.add_argument("--protocol", choices=["implicit", "explicit"], help="HR/NDCG ranking or RMSE")
    parser.add_argument("--rounds", type=int, help="most communication rounds (epochs for centralized); early "
                        "stopping on validation (train.patience) may end sooner")
    parser.add_argument("--upload", choices=["interacted", "full"], help="payload: touched items or whole catalogue")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, help="run folder (default runs/recsys/<algorithm>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set train.lr=0.005 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--checkpoint-every", type=int, metavar="K",
                        help="write OUT/checkpoint.pt every K rounds (and after the last)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the run in DIR from its checkpoint (with no config flags: the config stored "
                             "in it; with flags: they must give the same config)")


def resolve(args: argparse.Namespace) -> Any:
    """The resolved config (the algorithm's tuned defaults, `fedge.recsys.defaults`, then YAML, flags, `--set`),
    with the algorithm's name checked against the registry."""
    from fedge.recsys.algorithms import RECSYS_ALGORITHMS
    from fedge.recsys.defaults import recsys_config

    mapping: dict[str, Any] = load_yaml(args.config) if args.config else {}
    flags = {"data.dataset": args.dataset, "data.data_dir": args.data_dir and str(args.data_dir),
             "data.protocol": args.protocol, "algorithm": args.algorithm, "train.rounds": args.rounds,
             "train.upload": args.upload, "seed": args.seed, "out_dir": args.out and str(args.out)}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.download:
        overrides.append("data.download=true")
    if args.no_progress:
        overrides.append("progress=false")
    mapping = apply_overrides(mapping, overrides + list(args.set))
    if "out_dir" not in mapping:
        mapping["out_dir"] = str(Path("runs/recsys") / str(mapping.get("algorithm", "fedmf")))
    cfg = recsys_config(mapping)  # the algorithm's tuned defaults under the YAML and flags
    RECSYS_ALGORITHMS.check([cfg.algorithm], "algorithm")
    return cfg


def _has_config_flags(args: argparse.Namespace) -> bool:
    return bool(args.config or args.set or args.download) or any(
        getattr(args, flag) is not None for flag in ("dataset", "data_dir", "algorithm", "protocol", "rounds",
                                                     "upload", "seed"))


def resume_config(args: argparse.Namespace) -> Any:
    """The config for `--resume DIR`: the flags' (the checkpoint must match it) or, with none, the checkpoint's."""
    from fedge.recsys import checkpoint
    from fedge.recsys.config import RecsysConfig

    folder = args.resume
    if not folder.is_dir():
        raise ConfigError(f"--resume: {folder} is not a folder")
    if args.out is not None and args.out != folder:
        raise ConfigError(f"--resume {folder} and --out {args.out} disagree; give one of them")
    if _has_config_flags(args):
        args.out = folder
        return resolve(args)
    path = folder / checkpoint.FILENAME
    if not path.exists():
        raise ConfigError(f"--resume: no checkpoint in {folder} (was it run with --checkpoint-every?)")
    mapping = checkpoint.load(path).config
    mapping.update(out_dir=str(folder), progress=not args.no_progress)
    return build(RecsysConfig, mapping)


def main(args: argparse.Namespace) -> int:
    from fedge.recsys.runner import run
    from fedge.runtimes import distributed

    if distributed.launched():
        return _run_distributed(args)
    cfg = resume_config(args) if args.resume else resolve(args)
    every = args.checkpoint_every
    if every is None and args.resume:
        from fedge.recsys import checkpoint

        path = args.resume / checkpoint.FILENAME
        every = checkpoint.load(path).checkpoint_every if path.exists() else 0
    summary = run(cfg, checkpoint_every=every or 0, resume=bool(args.resume)).summary
    report(cfg, summary)
    return 0


DISTRIBUTED = ("fedmf", "fedncf")  # the recommenders whose users can be sharded over processes


def _run_distributed(args: argparse.Namespace) -> int:
    """`fedge recsys` as one of the processes torchrun started (`fedge launch --nproc P recsys ...`): the users are
    sharded over the processes in contiguous blocks, each trains its own; the first process writes the run folder
    and prints, the others stay quiet (fedge.recsys.runner.run's `sharding`)."""
    import dataclasses

    from fedge.config import to_dict
    from fedge.recsys.runner import run
    from fedge.runtimes import distributed

    if args.resume or args.checkpoint_every:
        raise ConfigError("--checkpoint-every/--resume: fedge recsys over several processes does not checkpoint yet")
    cfg = resolve(args)
    if cfg.algorithm not in DISTRIBUTED:
        raise ConfigError(f"algorithm: {cfg.algorithm} runs in one process only; over several processes: "
                          f"{', '.join(DISTRIBUTED)}")
    if cfg.secure.aggregation != "none":
        raise ConfigError(f"secure.aggregation: {cfg.secure.aggregation} is not yet available for fedge recsys over "
                          "several processes")
    if cfg.privacy.mechanism != "none":
        raise ConfigError(f"privacy.mechanism: {cfg.privacy.mechanism} is not yet available for fedge recsys over "
                          "several processes")
    with distributed.session(to_dict(cfg)) as (rank, _):
        lead = rank == 0
        with distributed.first_says_it(rank):  # e.g. more processes than users
            result = run(dataclasses.replace(cfg, progress=cfg.progress and lead), write=lead,
                         sharding=distributed.placement_shard)
        if lead:
            report(cfg, result.summary)
    return 0


def report(cfg: Any, summary: dict[str, Any]) -> None:
    """The table (and DP and stopping lines) `fedge recsys` prints for a finished run."""
    names = ("hr@10", "ndcg@10") if summary["protocol"] == "implicit" else ("rmse",)
    quality = [summary[f"{part}_{name}"] for name in names for part in ("val", "test")]
    headers = [f"{part} {name.upper()}" for name in names for part in ("val", "test")]
    print_table(f"fedge recsys: {cfg.algorithm} on {cfg.data.dataset} ({summary['protocol']}), round "
                f"{summary['best_round']} of {summary['rounds_done']} (best validation)",
                ["algorithm", *headers, "MB up", "MB down", "MB peer", "s/round"],
                [[cfg.algorithm, *quality, summary["mb_up"], summary["mb_down"], summary["mb_peer"],
                  summary["mean_round_s"]]])
    if "privacy_mechanism" in summary:
        epsilon = summary["epsilon"]
        console.print(f"user-level DP: ε = {'∞' if epsilon is None else f'{epsilon:.4g}'} at δ = {summary['delta']:g} "
                      f"after {summary['rounds_done']} rounds (σ = {summary['noise_multiplier']:.4g}, q = "
                      f"{summary['sample_rate']:g}, accountant {summary['accountant']})")
    if summary["stopped"]:
        console.print(summary["stopped"])
    console.print(f"run folder: {cfg.out_dir}")
