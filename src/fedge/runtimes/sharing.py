"""The peer-to-peer exchange (DPMN step 4) as messages, and what receivers remember of their senders' masks.

For every chosen pair (i receives from j):

* with dynamic neighbours (`pulls`), i sends j a request carrying the version of j's mask it holds (-1: none); with
  a fixed topology senders push, each knowing what it last sent each neighbour;
* j sends x̃_j ∘ m_j in the smallest layout, leaving the mask out when i holds j's current mask;
* i decodes it, with the mask it holds when the mask was left out, and remembers the mask version it now holds.

A sender leaves its mask out only when the receiver holds its *current* mask version, so a receiver decoding such a
body needs that sender's latest mask: receivers keep one store of each sender's latest mask they received, with
its version (every receiver holding that version would hold the same bits). Messages are sent ordered by receiver,
then by the sender's device id, and the resulting `Inbox` keeps that order.
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import DeviceState
from fedge.messaging import Inbox, Kind, Models, Requests, Role, route


class PeerExchange:
    def __init__(self, num_devices: int, dim: int) -> None:
        self.held = torch.full((num_devices, num_devices), -1, dtype=torch.int32)  # [receiver, sender] version held
        self.store_version = torch.full((num_devices,), -1, dtype=torch.long)  # [sender] latest version received
        self.store_masks = torch.zeros(num_devices, dim, dtype=torch.bool)  # [sender] that version's mask

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
        values = devices.bank[senders]
        if ctx.release is not None:  # the peer mechanism: one noisy release per sender, the same for every receiver
            base = devices.initial[None, :] * devices.masks[senders]
            values = ctx.release.release("model", round_number, ctx.ids[senders], base, values,
                                         devices.masks[senders])
        body = Models(values, slot, devices.masks[senders], ctx.payload_dtype, mask_known=versions == current)
        got = ctx.transport.send(route(Kind.MODEL, round_number, Role.DEVICE, Role.DEVICE, cols, rows), body,
                                 known=lambda sender, receiver: self._held_mask(sender, int(self.held[receiver,
                                                                                                      sender])))
        if not pulls:  # a pushing sender remembers which mask version it sent each neighbour
            self.held[rows, cols] = current.to(torch.int32)
        received = got.body
        assert isinstance(received, Models) and received.masks is not None
        receivers, from_rows = got.route.receivers, got.route.senders
        self._remember(receivers, from_rows, devices.mask_version[from_rows], received)
        return Inbox(receivers, from_rows, received)

    def _held_mask(self, sender: int, version: int) -> torch.Tensor:
        if int(self.store_version[sender]) != version:
            raise ValueError(f"a receiver holds version {version} of device row {sender}'s mask, which it never got")
        return self.store_masks[sender]

    def _remember(self, receivers: torch.Tensor, senders: torch.Tensor, versions: torch.Tensor,
                  received: Models) -> None:
        """Receivers now hold these mask versions; keep each sender's newest mask received."""
        assert received.masks is not None
        self.held[receivers, senders] = versions.to(torch.int32)
        newer = versions > self.store_version[senders]
        if bool(newer.any()):
            messages = torch.nonzero(newer).flatten()
            who = senders[messages]  # a sender appears once per receiver: all its messages carry the same mask
            self.store_version[who] = versions[messages]
            self.store_masks[who] = received.masks.index_select(0, received.slot[messages])

    def state_dict(self) -> dict[str, Any]:
        return {"held": self.held, "store_version": self.store_version, "store_masks": self.store_masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.held, self.store_version, self.store_masks = state["held"], state["store_version"], state["store_masks"]


__all__ = ["PeerExchange"]
