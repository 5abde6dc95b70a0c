"""What components may read besides the devices' state: the run's fixed facts (`RunContext`) and this round's
participation (`Round`). Both are built by the runtime; no component reads the experiment config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fedge.core.streams import Streams
from fedge.messaging.transport import Transport
from fedge.privacy.accounting import PrivacyAccountant
from fedge.privacy.mechanisms import PeerRelease


def _itself(value: int) -> int:
    return value


@dataclass
class RunContext:
    """Fixed for a run. Per-device tensors are indexed by storage row; `ids[row]` is the device stored there."""

    dim: int
    ids: torch.Tensor  # [N] long: device id of each row (a permutation of 0..N-1)
    layer_groups: list[tuple[int, int]]  # prunable tensors (start, stop)
    prunable: torch.Tensor  # [d] bool
    head: tuple[int, int]  # last layer (start, stop), for similarity sketches
    topology: torch.Tensor  # [N, N] bool: fixed logical topology (dfl, dpmp)
    physical: torch.Tensor  # [N, N] bool: who can reach whom at all (candidate sets)
    target_density: torch.Tensor  # [N] per-device pruning target (bandwidth class)
    k_max: torch.Tensor  # [N] per-device neighbour cap (bandwidth class)
    data_sizes: torch.Tensor  # [N] training samples per device
    val_sizes: torch.Tensor  # [N] local validation samples per device
    streams: Streams  # named random streams keyed by (seed, purpose, device id, round)
    transport: Transport  # every message goes through it
    payload_dtype: str = "fp32"  # value precision of model payloads
    coordinates: torch.Tensor | None = None  # [N, 2] device positions in the unit square (latency/proximity)
    edge_coordinates: torch.Tensor | None = None  # [K, 2] edge-server (cluster leader) positions
    privacy: PrivacyAccountant | None = None  # per-device privacy histories when a DP mechanism is on
    release: PeerRelease | None = None  # the peer mechanism: what devices send their peers (None: their own values)
    # The largest of an integer over every process of a distributed run (one process: the integer itself), for the
    # few shapes that must be the federation's, not one process's (the regularizer's padding width).
    agree_max: Callable[[int], int] = _itself

    @property
    def num_devices(self) -> int:
        return len(self.ids)

    @staticmethod
    def standalone(num_devices: int, dim: int, seed: int = 0, **fields: Any) -> RunContext:
        """A context for using components outside a runtime (tests, notebooks): devices 0..N-1 in order, one
        prunable layer, everyone reachable, no fixed topology, a direct transport with its own ledger; `fields`
        replace any of these."""
        from fedge.messaging.ledger import Ledger
        from fedge.messaging.transport import DirectTransport

        n = num_devices
        defaults: dict[str, Any] = dict(
            dim=dim, ids=torch.arange(n), layer_groups=[(0, dim)], prunable=torch.ones(dim, dtype=torch.bool),
            head=(0, dim), topology=torch.zeros(n, n, dtype=torch.bool), physical=torch.ones(n, n, dtype=torch.bool),
            target_density=torch.ones(n), k_max=torch.ones(n, dtype=torch.long),
            data_sizes=torch.ones(n, dtype=torch.long), val_sizes=torch.ones(n, dtype=torch.long),
            streams=Streams(seed), transport=DirectTransport(Ledger(n)))
        return RunContext(**{**defaults, **fields})

    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Storage rows of the given device ids."""
        rows = torch.empty_like(self.ids)
        rows[self.ids] = torch.arange(len(self.ids))
        return rows[ids]

    def by_id(self, rows: torch.Tensor) -> torch.Tensor:
        """The given rows sorted by device id (the order every reduction over devices runs in)."""
        return rows[torch.argsort(self.ids[rows])]


@dataclass(frozen=True)
class Round:
    """Who takes part in round `number`: members are in the federation, online ones reachable (not failed, not
    too slow for the deadline), participants the online ones the algorithm chose (all of them, or a sample)."""

    number: int
    members: torch.Tensor  # [N] bool
    online: torch.Tensor  # [N] bool
    participants: torch.Tensor  # [N] bool
    leaders_up: torch.Tensor | None = None  # [K] bool: edge servers (cluster leaders) reachable this round
