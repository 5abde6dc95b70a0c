"""Checkpoint files, shared by `fedge run` (`fedge.runtimes.checkpoint`) and `fedge recsys`
(`fedge.recsys.checkpoint`): one self-verifying file per run, written atomically.

Layout: a magic line naming the format and its version, a SHA-256 line and a length line, then the `torch.save`
payload (loaded with `weights_only=True`: plain tensors and containers, no arbitrary code). It is written with
`fedge.output.atomic_write_bytes` (temp file, fsync, rename), so a crash mid-write leaves the previous checkpoint.
`read` checks the magic, the length (truncation) and the checksum (corruption); any failure is a one-line
`ConfigError` and nothing is loaded half.

`verify_results` is what `--resume` checks before it touches a folder: the folder's newest results must come from
the checkpoint — its summary.json (if any) carries the checkpoint's run id and its metrics.jsonl begins with the
checkpoint's history. Otherwise the folder holds a later run and resuming would put the older one back over it.
`config_hash` is the hash a checkpoint stores of the config it was made with, leaving out the keys a resumed run may
change.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from fedge.config import ConfigError
from fedge.output import atomic_write_bytes, dumps, read_jsonl

FAMILY = b"FEDGE-CHECKPOINT v"  # every fedge run checkpoint's magic starts so; recsys's: b"FEDGE-RECSYS-CHECKPOINT"


def config_hash(config: dict[str, Any], unhashed: tuple[str, ...]) -> str:
    """16 hex digits of the SHA-256 of `config` without the dotted keys `unhashed` (e.g. "out", "train.rounds")."""
    data = json.loads(json.dumps(config, sort_keys=True))
    for dotted in unhashed:
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def write(path: str | Path, magic: bytes, payload: dict[str, Any]) -> None:
    """`payload` (tensors and plain containers) as a checkpoint file with header `magic`, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = magic + hashlib.sha256(body).hexdigest().encode() + b"\n" + str(len(body)).encode() + b"\n"
    atomic_write_bytes(path, header + body)


def read(path: str | Path, magic: bytes, family: bytes = FAMILY) -> dict[str, Any]:
    """The verified payload of a checkpoint file with header `magic` (a header of the same `family` but another
    version is an older format)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"checkpoint {path}: cannot read it ({err.strerror})") from None
    if not raw.startswith(magic):
        if raw.startswith(family):
            written_by = raw.split(b"\n", 1)[0].decode(errors="replace")
            raise ConfigError(f"checkpoint {path}: in an older format ({written_by}); rerun without --resume")
        raise ConfigError(f"checkpoint {path}: not a fedge checkpoint (bad header); refusing to resume")
    lines = raw[len(magic):].split(b"\n", 2)
    if len(lines) < 3 or not lines[1].isdigit():
        raise ConfigError(f"checkpoint {path}: truncated header; refusing to resume")
    digest, length, body = lines[0].decode(errors="replace"), int(lines[1]), lines[2]
    if len(body) != length:
        raise ConfigError(f"checkpoint {path}: truncated ({len(body)} of {length} payload bytes); refusing to resume")
    if hashlib.sha256(body).hexdigest() != digest:
        raise ConfigError(f"checkpoint {path}: corrupt (checksum mismatch); refusing to resume")
    try:
        data = torch.load(io.BytesIO(body), weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem means the file is unusable
        raise ConfigError(f"checkpoint {path}: unreadable payload ({type(err).__name__}); refusing to resume") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"checkpoint {path}: unreadable payload (not a mapping); refusing to resume")
    return data


def verify_results(folder: Path, checkpoint: Path, run_id: str, history: list[dict[str, Any]]) -> None:
    """ConfigError unless `folder`'s newest results come from the checkpoint at `checkpoint` (run `run_id`, rounds
    `history`). A checkpoint written before run ids existed (`run_id` "") is checked on its metrics only."""
    advice = "resuming would put its older run back over them; rerun without --resume (with a new --out)"
    summary = folder / "summary.json"
    if summary.exists() and run_id:
        try:
            written = json.loads(summary.read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            written = None
        if written != run_id:
            raise ConfigError(f"--resume: {summary} comes from a later run than {checkpoint}; {advice}")
    metrics = folder / "metrics.jsonl"
    records = read_jsonl(metrics) if metrics.exists() else []
    expected = [json.loads(dumps(record)) for record in history]
    if records[: len(expected)] != expected:
        raise ConfigError(f"--resume: {metrics} does not continue {checkpoint} (round {len(history)}): the "
                          f"folder's newest results come from another run; {advice}")


__all__ = ["FAMILY", "config_hash", "read", "verify_results", "write"]
