"""Checkpoints of a run over several processes: each process writes its own part, rank 0 names the last complete one.

Every `checkpoint_every` rounds each process writes `checkpoint.rank{r}.round{k}.pt` into the algorithm's folder on
its machine (the single-process format, `fedge.runtimes.checkpoint`: its federation state, its own ledger, the
metrics so far), atomically. Once all have written (a barrier), rank 0 writes `checkpoint.json` — round k, the
number of processes and the run's id — atomically, and only then (another barrier) does each process delete its
older round files. A crash at any moment therefore leaves a `checkpoint.json` naming a round for which every
process's file exists: the *last complete* checkpoint. On resume (`--resume`, or a restart by torchrun's
`--max-restarts`) rank 0 reads it and tells the others which round to load; the number of processes must be the
same.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist

from fedge.config import ConfigError
from fedge.experiment import ExperimentConfig
from fedge.messaging.distributed import Placement
from fedge.output import atomic_write_json
from fedge.runtimes import checkpoint

MARKER = "checkpoint.json"


def _path(folder: Path, rank: int, round_number: int) -> Path:
    return folder / f"checkpoint.rank{rank}.round{round_number}.pt"


def save(folder: Path, saved: checkpoint.Checkpoint, placement: Placement, run_id: str) -> None:
    """Write this process's part of round `saved.round`; collective (every process calls it at the same round)."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = _path(folder, placement.rank, saved.round)
    checkpoint.save(mine, saved)
    dist.barrier()
    if placement.rank == 0:
        atomic_write_json(folder / MARKER, {"round": saved.round, "processes": placement.world, "run_id": run_id,
                                            "algorithm": saved.algorithm})
    dist.barrier()
    for old in folder.glob(f"checkpoint.rank{placement.rank}.round*.pt"):
        if old != mine:
            old.unlink(missing_ok=True)


def load(folder: Path, config: ExperimentConfig, algorithm: str,
         placement: Placement) -> checkpoint.Checkpoint | None:
    """This process's part of the last complete checkpoint (None: there is none, start from round 0);
    collective."""
    announced: list[object] = [None]
    if placement.rank == 0:
        marker = folder / MARKER
        announced[0] = json.loads(marker.read_text()) if marker.exists() else None
    dist.broadcast_object_list(announced, src=0)
    found = announced[0]
    if found is None:
        return None
    assert isinstance(found, dict)
    if int(found["processes"]) != placement.world:
        raise ConfigError(f"--resume: {folder} was checkpointed by {found['processes']} processes, not "
                          f"{placement.world}; resume with --nproc-per-node × --nnodes = {found['processes']}")
    path = _path(folder, placement.rank, int(found["round"]))
    if not path.exists():
        raise ConfigError(f"--resume: {path} is missing on this machine (rank {placement.rank}); its part of the "
                          f"round-{found['round']} checkpoint is needed")
    return checkpoint.load(path, config, algorithm)


__all__ = ["MARKER", "load", "save"]
