"""One ledger of every byte that crossed a transport: per link, per message kind, per device, per round.

The transport records each batch of messages with the exact length of every message (frame included); nothing else
writes to the ledger, so there are no size formulas outside the codec and no bytes that were not sent.
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.messaging.messages import BACKHAUL, Kind, Link, Role, Route


class Ledger:
    """Cumulative and this-round byte counts; per-device sent/received bytes of the round (for the latency model)."""

    def __init__(self, num_devices: int = 0) -> None:
        self.num_devices = num_devices
        self.bytes_by_link: dict[str, int] = dict.fromkeys((link.value for link in Link), 0)
        self.messages_by_link: dict[str, int] = dict.fromkeys((link.value for link in Link), 0)
        self.bytes_by_kind: dict[str, int] = dict.fromkeys((kind.name.lower() for kind in Kind), 0)
        self.begin_round()

    def begin_round(self) -> None:
        self.round_by_link: dict[str, int] = dict.fromkeys((link.value for link in Link), 0)
        self.device_sent = torch.zeros(self.num_devices, dtype=torch.float64)
        self.device_received = torch.zeros(self.num_devices, dtype=torch.float64)

    def record(self, route: Route, sizes: torch.Tensor) -> None:
        """Count a batch of messages whose encoded lengths (frame included) are `sizes` [P]."""
        total = int(sizes.sum())
        link = route.link.value
        self.bytes_by_link[link] += total
        self.round_by_link[link] += total
        self.messages_by_link[link] += len(route)
        self.bytes_by_kind[route.kind.name.lower()] += total
        as_float = sizes.to(torch.float64)
        if route.sender_role == Role.DEVICE and self.num_devices:
            self.device_sent.index_add_(0, route.senders, as_float)
        if route.receiver_role == Role.DEVICE and self.num_devices:
            self.device_received.index_add_(0, route.receivers, as_float)

    @property
    def total(self) -> int:
        return sum(self.bytes_by_link.values())

    @property
    def round_total(self) -> int:
        return sum(self.round_by_link.values())

    @property
    def round_backhaul(self) -> int:
        return sum(self.round_by_link[link.value] for link in BACKHAUL)

    def state_dict(self) -> dict[str, Any]:
        return {"bytes_by_link": dict(self.bytes_by_link), "messages_by_link": dict(self.messages_by_link),
                "bytes_by_kind": dict(self.bytes_by_kind)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bytes_by_link = dict(state["bytes_by_link"])
        self.messages_by_link = dict(state["messages_by_link"])
        # kinds added since the state was saved start at zero
        self.bytes_by_kind = {**dict.fromkeys((kind.name.lower() for kind in Kind), 0), **state["bytes_by_kind"]}


__all__ = ["Ledger"]
