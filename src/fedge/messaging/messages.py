"""What a message is: its kind, its endpoints and the link it crosses.

Messages travel in batches of one kind per call (`Route`): message p goes from `senders[p]` to `receivers[p]`, all
senders of one role and all receivers of one role. Endpoints are numbered per role: devices by the row in which the
runtime stores them (the transport writes each device's id, which never depends on storage, into the frame, and maps
it back on receipt), edge servers (cluster leaders, edges) by their index, the server (FedAvg's server, hfl's cloud)
as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

import torch


class Kind(IntEnum):
    """What a message carries (its code in the frame)."""

    MODEL = 0  # a device's model (peer exchange) or its upload to an aggregator
    PROBE = 1  # a similarity sketch (sent on request) or profile (pushed, decentralized recommendation)
    REQUEST = 2  # "send me your model" (with the mask version held), "send me a sketch", "send me these rows"
    AGGREGATE = 3  # an aggregator's model sent up the hierarchy (edge → cloud)
    DOWNLOAD = 4  # an aggregator's model sent down (server → device, cloud → edge, edge → device)
    KEYS = 5  # secure aggregation: a device's public keys, or the server relaying its neighbours' keys
    SHARES = 6  # secure aggregation: Shamir shares encrypted to their recipients (relayed by the server)
    MASKED = 7  # secure aggregation: a device's masked, quantized update; or an encrypted (HE) update
    UNMASK = 8  # secure aggregation: the server's list of survivors, or a device's shares for unmasking


class Role(IntEnum):
    DEVICE = 0
    EDGE = 1  # an edge server: a cluster leader of hfl, an edge of decentralized recommendation or caching
    SERVER = 2  # FedAvg's server, hfl's cloud


class Link(str, Enum):
    """Kinds of link the ledger counts separately."""

    DEVICE_DEVICE = "device-device"
    DEVICE_EDGE = "device-edge"
    EDGE_EDGE = "edge-edge"
    EDGE_CLOUD = "edge-cloud"
    DEVICE_SERVER = "device-server"


_LINKS = {
    frozenset({Role.DEVICE}): Link.DEVICE_DEVICE,
    frozenset({Role.DEVICE, Role.EDGE}): Link.DEVICE_EDGE,
    frozenset({Role.EDGE}): Link.EDGE_EDGE,
    frozenset({Role.EDGE, Role.SERVER}): Link.EDGE_CLOUD,
    frozenset({Role.DEVICE, Role.SERVER}): Link.DEVICE_SERVER,
}


def link_of(a: Role, b: Role) -> Link:
    """The link between two roles (the server talks to edges over the backhaul, to devices directly)."""
    try:
        return _LINKS[frozenset({a, b})]
    except KeyError:
        raise ValueError(f"no link between {a.name} and {b.name}") from None


BACKHAUL = (Link.EDGE_CLOUD, Link.DEVICE_SERVER)  # links that cross the backhaul to the cloud


@dataclass(frozen=True)
class Route:
    """A batch of messages of one kind in one round: message p goes from `senders[p]` to `receivers[p]`."""

    kind: Kind
    round: int
    sender_role: Role
    receiver_role: Role
    senders: torch.Tensor  # [P] long: endpoint numbers of the senders' role
    receivers: torch.Tensor  # [P] long

    def __post_init__(self) -> None:
        if self.senders.shape != self.receivers.shape or self.senders.dim() != 1:
            raise ValueError("a route needs one sender and one receiver per message")

    @property
    def link(self) -> Link:
        return link_of(self.sender_role, self.receiver_role)

    def __len__(self) -> int:
        return len(self.senders)


def route(kind: Kind, round_number: int, sender_role: Role, receiver_role: Role, senders: torch.Tensor | int,
          receivers: torch.Tensor | int) -> Route:
    """A `Route`; a scalar endpoint is repeated for every message (one aggregator, one broadcaster)."""
    senders_t = torch.as_tensor(senders, dtype=torch.long)
    receivers_t = torch.as_tensor(receivers, dtype=torch.long)
    if senders_t.dim() == 0:
        senders_t = senders_t.expand(receivers_t.numel() if receivers_t.dim() else 1)
    if receivers_t.dim() == 0:
        receivers_t = receivers_t.expand(senders_t.numel())
    return Route(kind, round_number, sender_role, receiver_role, senders_t.contiguous(), receivers_t.contiguous())


__all__ = ["BACKHAUL", "Kind", "Link", "Role", "Route", "link_of", "route"]
