"""`fedge run` over many processes: launched by torchrun, one process (rank) per block of devices.

`torchrun --nproc-per-node P -m fedge run ...` (or `fedge launch --nproc P run ...`) starts P copies of the same
command. Each joins the default process group (gloo: CPU tensors; every rank must run the same config, which is
checked by hashing it on every rank), hosts a contiguous block of device ids (`fedge.messaging.distributed.
Placement`) and runs the one round loop with the `torch.distributed` transport: it trains, prunes and evaluates its
own devices, speaks for them in every exchange, and holds a replica of every aggregator. Per-device results the
metrics need (losses, accuracies, densities, neighbour counts) and the ledgers are combined by `Shard`: each value
comes from the one rank that hosts its device (a sum with zeros elsewhere, so exact), so `metrics.jsonl` is the
single-process file byte for byte (tested with 2 and 3 processes). Rank 0 writes the run folder and prints; the
others stay quiet.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fedge.config import ConfigError
from fedge.messaging import Ledger
from fedge.messaging.distributed import Placement


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE) with more than one
    process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(timeout_s: float = 300.0) -> tuple[int, int]:
    """Join the default process group (gloo) if not yet joined; returns (rank, world size)."""
    if not dist.is_initialized():
        try:
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s), **_attempt_store(timeout_s))
        except Exception as error:  # a launcher's rendezvous failure is the user's setup, said in one line
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            raise ConfigError(f"torch.distributed: could not join the process group at {where} within "
                              f"{timeout_s:g} s ({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    return dist.get_rank(), dist.get_world_size()


def _attempt_store(timeout_s: float) -> dict[str, object]:
    """Under torchrun, the process group's keys in a store of their own per restart (`TORCHELASTIC_RESTART_COUNT`):
    after a restart the rendezvous store can still hold the previous attempt's addresses, and a process reading a
    dead peer's address fails to connect. Outside torchrun: {} (the env:// defaults)."""
    env = os.environ
    if "TORCHELASTIC_RESTART_COUNT" not in env or not {"MASTER_ADDR", "MASTER_PORT", "RANK"} <= env.keys():
        return {}
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    agent_hosts_it = env.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts_it, timeout=datetime.timedelta(seconds=timeout_s),
                          multi_tenant=not agent_hosts_it)
    prefix = dist.PrefixStore(f"fedge/attempt-{env['TORCHELASTIC_RESTART_COUNT']}", store)
    return {"store": prefix, "rank": rank, "world_size": world}


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def first_says_it(rank: int) -> Iterator[None]:
    """Around checks that every process makes alike (same config, placement): a ConfigError is printed by rank 0
    only; the other ranks end with exit code 2 and say nothing, so the user reads the problem once."""
    try:
        yield
    except ConfigError:
        if rank != 0:
            raise SystemExit(2) from None
        raise


@contextlib.contextmanager
def session(resolved: dict[str, object]) -> Iterator[tuple[int, int]]:
    """Join the process group, refuse to start unless every process resolved the same config (said once, by rank
    0), yield (rank, world size), and leave the group at the end, whatever happens."""
    rank, world = join()
    try:
        with first_says_it(rank):
            check_same_config(resolved)
        yield rank, world
    finally:
        leave()


def check_same_config(resolved: dict[str, object]) -> None:
    """Refuse to start unless every rank resolved the same config (its hash, compared on every rank)."""
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()
    everyone: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, digest)
    differing = [rank for rank, other in enumerate(everyone) if other != everyone[0]]
    if differing:
        raise ConfigError(f"torch.distributed: ranks {differing} resolved another config than rank 0 "
                          "(every process must get the same flags, files and environment)")


def placement(num_devices: int) -> Placement:
    """This rank's block of devices; a one-line error when there are more processes than devices."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if world > num_devices:
        raise ConfigError(f"torch.distributed: {world} processes for {num_devices} devices; use at most "
                          f"{num_devices} processes (--nproc-per-node × --nnodes)")
    return Placement(num_devices, world, rank)


def placement_shard(num_devices: int) -> Shard:
    """This rank's `Shard` of `num_devices` devices (`placement`'s one-line error for too many processes)."""
    return Shard(placement(num_devices))


_LEDGER_DICTS = ("bytes_by_link", "messages_by_link", "bytes_by_kind", "round_by_link")


@dataclass
class Shard:
    """What a rank holds of the federation, and how its per-device values join the other ranks'."""

    placement: Placement

    def __post_init__(self) -> None:
        self.local = self.placement.local  # [N] bool by row (rows are device ids in a distributed run)

    def mine(self, rows: torch.Tensor) -> torch.Tensor:
        """The given rows that this rank hosts (order kept)."""
        return rows[self.local[rows]]

    def complete(self, values: torch.Tensor) -> torch.Tensor:
        """[N, ...] values, each row taken from the rank that hosts its device (exact: zeros elsewhere)."""
        kind = values.dtype
        work = values.to(torch.int64) if kind == torch.bool else values.clone()
        work[~self.local] = 0
        dist.all_reduce(work)
        return work.to(kind)

    def total(self, value: int) -> int:
        """The sum of `value` over the processes."""
        work = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(work)
        return int(work)

    def agree_max(self, value: int) -> int:
        """The largest `value` over the processes (`RunContext.agree_max`)."""
        work = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(work, op=dist.ReduceOp.MAX)
        return int(work)

    def ledger(self, local: Ledger) -> Ledger:
        """The ledger of the whole federation: every rank's counts summed (each message was counted by one rank)."""
        keys = [(name, key) for name in _LEDGER_DICTS for key in getattr(local, name)]
        counts = torch.tensor([getattr(local, name)[key] for name, key in keys], dtype=torch.int64)
        dist.all_reduce(counts)
        merged = Ledger(local.num_devices)
        for (name, key), value in zip(keys, counts.tolist(), strict=True):
            getattr(merged, name)[key] = value
        per_device = torch.stack([local.device_sent, local.device_received])
        dist.all_reduce(per_device)
        merged.device_sent, merged.device_received = per_device[0], per_device[1]
        return merged


__all__ = ["Shard", "check_same_config", "first_says_it", "join", "launched", "leave", "placement", "placement_shard",
           "session"]
