"""Checkpoint and resume: the whole state of one algorithm's run in one file, written atomically.

A checkpoint holds everything the next round reads, each part as its owner hands it over (`state_dict`): the
devices' models, masks and momentum; every component's state (pruning schedule, similarity table, aggregator
models); the exchange protocol's memory of held masks and the last inbox; the ledger's byte counts; the round and
simulated time; the metrics of every round so far, and the config it was made with. Every random draw comes from a
stream keyed by (seed, purpose, device, round) (fedge.core.streams), so no generator state needs saving.

File layout: a magic line, a SHA-256 line and a length line, then the `torch.save` payload (loaded with
`weights_only=True`: plain tensors and containers, no arbitrary code). It is written with
`fedge.output.atomic_write_bytes` (temp file, fsync, rename), so a crash mid-write leaves the previous checkpoint.
Loading checks the magic, the length (truncation), the checksum (corruption), the algorithm and the config hash
(a checkpoint of another experiment); any failure is a one-line `ConfigError`, and nothing is loaded half.
The config hash leaves out `out`, `rounds`, `algorithms` and `runtime`: a run may be moved, extended, resumed for a
subset, or resumed over another transport (they give the same results).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedge.config import ConfigError, to_dict
from fedge.experiment import ExperimentConfig
from fedge.output import atomic_write_bytes

MAGIC = b"FEDGE-CHECKPOINT v2\n"
FILENAME = "checkpoint.pt"
UNHASHED = ("out", "rounds", "algorithms", "runtime")


def config_hash(config: ExperimentConfig) -> str:
    data = {k: v for k, v in to_dict(config).items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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


def save(path: str | Path, checkpoint: Checkpoint) -> None:
    buffer = io.BytesIO()
    torch.save(vars(checkpoint), buffer)
    body = buffer.getvalue()
    header = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + str(len(body)).encode() + b"\n"
    atomic_write_bytes(path, header + body)


def load(path: str | Path, config: ExperimentConfig | None = None, algorithm: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint; with `config`/`algorithm`, also check that it belongs to them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"checkpoint {path}: cannot read it ({err.strerror})") from None
    if not raw.startswith(MAGIC):
        if raw.startswith(b"FEDGE-CHECKPOINT v"):
            written_by = raw.split(b"\n", 1)[0].decode(errors="replace")
            raise ConfigError(f"checkpoint {path}: in an older format ({written_by}); rerun without --resume")
        raise ConfigError(f"checkpoint {path}: not a fedge checkpoint (bad header); refusing to resume")
    lines = raw[len(MAGIC):].split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit():
        raise ConfigError(f"checkpoint {path}: truncated header; refusing to resume")
    digest, length, body = lines[0].decode(errors="replace"), int(lines[1]), lines[2]
    if len(body) != length:
        raise ConfigError(f"checkpoint {path}: truncated ({len(body)} of {length} payload bytes); refusing to resume")
    if hashlib.sha256(body).hexdigest() != digest:
        raise ConfigError(f"checkpoint {path}: corrupt (checksum mismatch); refusing to resume")
    try:
        data = torch.load(io.BytesIO(body), weights_only=True)
        checkpoint = Checkpoint(**data)
    except Exception as err:  # noqa: BLE001 - any unpickling problem means the file is unusable
        raise ConfigError(f"checkpoint {path}: unreadable payload ({type(err).__name__}); refusing to resume") \
            from None
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


def remove_stale_temporaries(folder: Path) -> None:
    """Temp files left by a crash in the middle of an atomic write (never the checkpoint itself)."""
    for stale in folder.glob(f".{FILENAME}.*.tmp"):
        stale.unlink(missing_ok=True)
