"""What devices received from their peers in one exchange, as they read it.

Message e went from `senders[e]` to `receivers[e]` and carried `models` row e (decoded on the loopback transport,
the sender's tensors on the direct one). Messages are ordered by receiver, then by the sender's device id, so that
anything a receiver computes from them (a regularizer's sum, an average) runs in an order that does not depend on
where devices are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedge.messaging.bodies import Models


@dataclass
class Inbox:
    receivers: torch.Tensor  # [E] long: storage rows of the receiving devices
    senders: torch.Tensor  # [E] long: storage rows of the sending devices
    models: Models  # what was received (received form: values at the payload's precision, zero where not kept)

    @staticmethod
    def empty(dim: int) -> Inbox:
        none = torch.zeros(0, dtype=torch.long)
        return Inbox(none, none, Models(torch.zeros(0, dim), none, torch.zeros(0, dim, dtype=torch.bool)))

    def __len__(self) -> int:
        return len(self.receivers)

    def degree(self, num_devices: int) -> torch.Tensor:
        """[N] messages received per device."""
        return torch.bincount(self.receivers, minlength=num_devices)

    def adjacency(self, num_devices: int) -> torch.Tensor:
        """[N, N] bool: (i, j) when i received from j."""
        adjacency = torch.zeros(num_devices, num_devices, dtype=torch.bool)
        adjacency[self.receivers, self.senders] = True
        return adjacency

    def values(self, messages: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """[len(messages), stop - start] received values of the given messages on coordinates [start, stop)."""
        return self.models.values[:, start:stop].index_select(0, self.models.slot[messages])

    def masks(self, messages: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The masks carried by (or, cached, held for) the given messages, on coordinates [start, stop)."""
        if self.models.masks is None:
            width = len(range(self.models.dim)[start:stop])
            return torch.ones(len(messages), width, dtype=torch.bool)
        return self.models.masks[:, start:stop].index_select(0, self.models.slot[messages])

    def state_dict(self) -> dict[str, Any]:
        m = self.models
        return {"receivers": self.receivers, "senders": self.senders, "values": m.values, "slot": m.slot,
                "masks": m.masks, "value_dtype": m.value_dtype}

    @staticmethod
    def from_state_dict(state: dict[str, Any]) -> Inbox:
        models = Models(state["values"], state["slot"], state["masks"], state["value_dtype"])
        return Inbox(state["receivers"], state["senders"], models)


__all__ = ["Inbox"]
