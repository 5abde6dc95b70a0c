"""The peer-to-peer exchange (DPMN step 4) as messages, and what receivers remember of their senders' masks.

For every chosen pair (i receives from j):

* with dynamic neighbours (`pulls`), i sends j a request carrying the version of j's mask it holds (-1: none); with
  a fixed topology senders push, each knowing what it last sent each neighbour;
* j sends x̃_j ∘ m_j in the smallest layout, leaving the mask out when i holds j's current mask;
* i decodes it, with the mask it holds when the mask was left out, and remembers the mask version it now holds.

Receivers keep the masks they hold in one store keyed by (sender, version) (each receiver's copy would be the same
bits), trimmed to the versions some receiver still holds. Messages are sent ordered by receiver, then by the
sender's device id, and the resulting `Inbox` keeps that order.
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import DeviceState
from fedge.messaging import Inbox, Kind, Models, Requests, Role, route


class PeerExchange:
    def __init__(self, num_devices: int) -> None:
        self.held = torch.full((num_devices, num_devices), -1, dtype=torch.int32)  # [receiver, sender] version held
        self.store: dict[tuple[int, int], torch.Tensor] = {}  # (sender row, version) -> mask some receiver holds

    def exchange(self, devices: DeviceState, ctx: RunContext, round_number: int, adjacency: torch.Tensor,
                 pulls: bool) -> Inbox:
        """Deliver every chosen model; returns what the receivers got."""
        rows, cols = torch.nonzero(adjacency, as_tuple=True)
        if len(rows) == 0:
            return Inbox.empty(devices.bank.shape[1])
        order = torch.argsort(rows * len(ctx.ids) + ctx.ids[cols])  # by receiver, then sender id
        rows, cols = rows[order], cols[order]
        if pulls:  # the receivers ask, saying which version of the sender's mask they hold
            asked = ctx.transport.send(route(Kind.REQUEST, round_number, Role.DEVICE, Role.DEVICE, rows, cols),
                                       Requests(len(rows), self.held[rows, cols].long()))
            assert isinstance(asked.body, Requests) and asked.body.held_version is not None
            rows, cols, versions = asked.route.senders, asked.route.receivers, asked.body.held_version
        else:  # fixed topology: a sender knows what it last sent each neighbour
            versions = self.held[rows, cols].long()
        current = devices.mask_version[cols]
        senders, slot = torch.unique(cols, return_inverse=True)
        body = Models(devices.bank[senders], slot, devices.masks[senders], ctx.payload_dtype,
                      mask_known=versions == current)
        cols_list, versions_list = cols.tolist(), versions.tolist()
        got = ctx.transport.send(route(Kind.MODEL, round_number, Role.DEVICE, Role.DEVICE, cols, rows), body,
                                 known=lambda p: self.store[(cols_list[p], versions_list[p])])
        received = got.body
        assert isinstance(received, Models) and received.masks is not None
        receivers, from_rows = got.route.receivers, got.route.senders
        self._remember(receivers, from_rows, devices.mask_version[from_rows], received)
        return Inbox(receivers, from_rows, received)

    def _remember(self, receivers: torch.Tensor, senders: torch.Tensor, versions: torch.Tensor,
                  received: Models) -> None:
        """Receivers now hold these mask versions; keep each new (sender, version) mask once, drop unheld ones."""
        assert received.masks is not None
        self.held[receivers, senders] = versions.to(torch.int32)
        for message, (sender, version) in enumerate(zip(senders.tolist(), versions.tolist(), strict=True)):
            if (sender, version) not in self.store:
                self.store[(sender, version)] = received.masks[int(received.slot[message])].clone()
        # Only senders of this exchange can have versions nobody holds any more.
        sent = set(senders.tolist())
        keys = [key for key in self.store if key[0] in sent]
        if keys:
            who = torch.tensor([s for s, _ in keys])
            which = torch.tensor([v for _, v in keys], dtype=torch.int32)
            still = (self.held[:, who] == which[None, :]).any(dim=0).tolist()
            for key, keep in zip(keys, still, strict=True):
                if not keep:
                    del self.store[key]

    def state_dict(self) -> dict[str, Any]:
        keys = sorted(self.store)
        return {"held": self.held, "store_keys": torch.tensor(keys, dtype=torch.long).reshape(-1, 2),
                "store_masks": torch.stack([self.store[k] for k in keys]) if keys else torch.zeros(0, 0,
                                                                                                    dtype=torch.bool)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.held = state["held"]
        self.store = {(int(s), int(v)): mask for (s, v), mask in zip(state["store_keys"].tolist(),
                                                                     state["store_masks"], strict=True)}


__all__ = ["PeerExchange"]
