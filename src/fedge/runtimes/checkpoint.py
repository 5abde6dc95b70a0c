"""Checkpoint and resume: the whole state of one algorithm's run in one file, written atomically.

A checkpoint holds everything the next round reads, each part as its owner hands it over (`state_dict`): the
devices' models, masks and momentum; every component's state (pruning schedule, similarity table, aggregator
models); the exchange protocol's memory of held masks and the last inbox; the ledger's byte counts; the round and
simulated time; the metrics of every round so far, and the config it was made with. Every random draw comes from a
stream keyed by (seed, purpose, device, round) (fedge.core.streams), so no generator state needs saving.

File layout (`fedge.runfolder.checkfile`): a magic line, a SHA-256 line and a length line, then the `torch.save` payload
(loaded with `weights_only=True`), written atomically, so a crash mid-write leaves the previous checkpoint. Loading
checks the magic, the length (truncation), the checksum (corruption), the algorithm and the config hash (a
checkpoint of another experiment); any failure is a one-line `ConfigError`, and nothing is loaded half. A checkpoint
carries its run's id (`run_id`, also in the run's summary.json), so `--resume` can tell whether the folder's newest
results are its own (`verify`).
The config hash leaves out `out`, `rounds`, `algorithms` and `runtime`: a run may be moved, extended, resumed for a
subset, or resumed over another transport (they give the same results).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fedge.runfolder.checkfile as checkfile
from fedge.config import ConfigError, to_dict
from fedge.experiment import ExperimentConfig
from fedge.output import remove_temporaries

MAGIC = b"FEDGE-CHECKPOINT v2\n"
FILENAME = "checkpoint.pt"
UNHASHED = ("out", "rounds", "algorithms", "runtime")


def config_hash(config: ExperimentConfig) -> str:
    return checkfile.config_hash(to_dict(config), UNHASHED)


@dataclass
class Checkpoint:
    algorithm: str
    round: int
    config_hash: str
    config: dict[str, Any]
    checkpoint_every: int
    federation: dict[str, Any]  # fedge.runtimes.rounds.Federation.state_dict()
    ledger: dict[str, Any]  # fedge.messaging.Ledger.state_dict()
    history: list[dict[str, Any]]
    run_id: str = ""  # the run's id (summary.json's run_id); "" in checkpoints written before run ids


def save(path: str | Path, checkpoint: Checkpoint) -> None:
    checkfile.write(path, MAGIC, vars(checkpoint))


def load(path: str | Path, config: ExperimentConfig | None = None, algorithm: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint; with `config`/`algorithm`, also check that it belongs to them."""
    path = Path(path)
    data = checkfile.read(path, MAGIC)
    try:
        checkpoint = Checkpoint(**data)
    except TypeError:
        raise ConfigError(f"checkpoint {path}: unreadable payload (fields); refusing to resume") from None
    if algorithm is not None and checkpoint.algorithm != algorithm:
        raise ConfigError(f"checkpoint {path}: written by algorithm {checkpoint.algorithm!r}, not {algorithm!r}")
    if config is not None:
        expected = config_hash(config)
        if checkpoint.config_hash != expected:
            raise ConfigError(f"checkpoint {path}: written with another config (hash {checkpoint.config_hash}, "
                              f"this run's is {expected}); pass the original --config/--set flags or none")
        if checkpoint.round > config.rounds:
            raise ConfigError(f"checkpoint {path}: at round {checkpoint.round}, beyond rounds={config.rounds}")
    return checkpoint


def verify(folder: Path, checkpoint: Checkpoint) -> None:
    """ConfigError unless `folder`'s newest results (summary.json, metrics.jsonl) come from `checkpoint`."""
    checkfile.verify_results(folder, folder / FILENAME, checkpoint.run_id, checkpoint.history)


def remove_stale_temporaries(folder: Path) -> None:
    """Temp files left by a crash in the middle of an atomic write (never a finished file)."""
    remove_temporaries(folder)
