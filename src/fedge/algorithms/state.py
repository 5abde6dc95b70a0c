"""What the devices themselves hold, stacked over a leading device dimension N: their models and masks.

Everything else belongs to whoever owns it: a pruner its schedule, a selector its similarity table, an aggregator
its model, the exchange protocol what receivers hold; each hands its own state to the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class DeviceState:
    bank: torch.Tensor  # [N, d] float32: every device's model x_i (pruned coordinates exactly +0)
    masks: torch.Tensor  # [N, d] bool: m_i
    mask_version: torch.Tensor  # [N] long: incremented whenever device i's mask changes
    initial: torch.Tensor  # [d]: the common initialisation x0, known to every device (updates are x̃_i − x0 ∘ m_i)
    momentum: torch.Tensor | None = None  # [N, d] SGD momentum buffers when momentum > 0

    @staticmethod
    def create(initial: torch.Tensor, num_devices: int, momentum: bool = False) -> DeviceState:
        n, d = num_devices, initial.numel()
        return DeviceState(
            bank=initial.expand(n, d).clone(),
            masks=torch.ones(n, d, dtype=torch.bool),
            mask_version=torch.zeros(n, dtype=torch.long),
            initial=initial.clone(),
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

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_state_dict(data: dict[str, Any]) -> DeviceState:
        return DeviceState(**data)
