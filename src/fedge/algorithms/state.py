"""The whole mutable state of a decentralized run, as tensors with a leading device dimension N.

Everything a round reads or writes lives here, so a checkpoint is this object plus the RNG states, and components
stay small stateless-by-design objects that update it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class FederationState:
    bank: torch.Tensor  # [N, d] float32: every device's model x_i (pruned coordinates exactly zero)
    masks: torch.Tensor  # [N, d] bool: m_i
    initial: torch.Tensor  # [d]: the common initialisation x0 (updates are x̃_i − x0 ∘ m_i)
    references: torch.Tensor  # [N, d]: the latest payload sent by each device (x̃_j as received)
    reference_masks: torch.Tensor  # [N, d] bool: the mask m_j carried by that payload
    neighbours: torch.Tensor  # [N, N] bool: S_i of the last exchange (row i)
    scores: torch.Tensor  # [N, N] float: latest similarity score i has of j
    scored_round: torch.Tensor  # [N, N] int32: the round in which i last scored j; -1 = never
    mask_version: torch.Tensor  # [N] int: incremented whenever device i's mask changes
    mask_version_held: torch.Tensor  # [N, N] int32: version of j's mask that i last received; -1 = none
    prune_progress: torch.Tensor  # [N] int: pruning steps taken (the density schedule's position)
    last_val_accuracy: torch.Tensor  # [N] float: local validation accuracy after the previous round (-1 = none)
    alive: torch.Tensor  # [N] bool: devices still in the federation
    momentum: torch.Tensor | None = None  # [N, d] SGD momentum buffers when momentum > 0
    members: torch.Tensor | None = None  # [N] bool: in the federation this round; while a round runs `alive` is
    #                                       narrowed to its participants (online, sampled), `members` keeps everyone
    cluster: torch.Tensor | None = None  # [N] long: home cluster (edge server) of each device (hfl); None = not yet
    leader_up: torch.Tensor | None = None  # [K] bool: cluster leaders reachable this round (set by the fault model)
    round: int = 0
    bytes_total: int = 0
    bytes_edge_total: int = 0  # device ↔ edge-server bytes (hfl)
    bytes_backhaul_total: int = 0  # bytes crossing the backhaul to the cloud (fedavg uploads/downloads, hfl edge↔cloud)
    time_total: float = 0.0  # simulated wall-clock seconds (latency model; 0 when it is off)

    @staticmethod
    def create(initial: torch.Tensor, num_devices: int, momentum: bool = False) -> FederationState:
        n, d = num_devices, initial.numel()
        return FederationState(
            bank=initial.expand(n, d).clone(),
            masks=torch.ones(n, d, dtype=torch.bool),
            initial=initial.clone(),
            references=initial.expand(n, d).clone(),
            reference_masks=torch.ones(n, d, dtype=torch.bool),
            neighbours=torch.zeros(n, n, dtype=torch.bool),
            scores=torch.zeros(n, n),
            scored_round=torch.full((n, n), -1, dtype=torch.int32),
            mask_version=torch.zeros(n, dtype=torch.long),
            mask_version_held=torch.full((n, n), -1, dtype=torch.int32),
            prune_progress=torch.zeros(n, dtype=torch.long),
            last_val_accuracy=torch.full((n,), -1.0),
            alive=torch.ones(n, dtype=torch.bool),
            momentum=torch.zeros(n, d) if momentum else None,
        )

    @property
    def num_devices(self) -> int:
        return self.bank.shape[0]

    def updates(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x̃_i − x0 ∘ m_i on coordinates [start, stop): each device's change since the common initialisation, zero
        where pruned."""
        cols = slice(start, stop)
        return self.bank[:, cols] - self.initial[None, cols] * self.masks[:, cols]

    def state_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_state_dict(data: dict[str, object]) -> FederationState:
        return FederationState(**data)  # type: ignore[arg-type]
