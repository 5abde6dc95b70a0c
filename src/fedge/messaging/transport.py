"""The transport contract and the two in-process transports.

A transport moves batches of messages (`Route` + body) and returns what the receivers got (`Delivery`); every batch
is counted in the ledger with the exact length of every message. Algorithms and aggregators read only deliveries.
Three operations, as a network runtime needs them (a torch.distributed runtime would map them onto send/recv,
gather and broadcast):

* `send`: point to point (peer exchange, similarity probes, requests);
* `gather`: devices (or edges) to their aggregators (uploads);
* `broadcast`: from aggregators down (downloads).

In one process the three differ only in the checks they make. Two transports implement them:

* `DirectTransport` ("direct"): hands the body's tensors over without encoding (zero-copy where the body allows),
  counting each message's length from the codec's size formulas;
* `LoopbackTransport` ("loopback"): encodes every message to `bytes` (frame + body), hands only those bytes to the
  receiving side, which parses the frame and decodes the body. Results are bitwise those of the direct transport
  (tested), so the direct path is shown to carry exactly what the bytes would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedge.core import codec
from fedge.messaging.bodies import Body, KnownMasks
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Kind, Role, Route

HeldMasks = Callable[[int, int], torch.Tensor]
"""(sender row, receiver row) -> the sender's mask that receiver holds: what a body in the cached layout (mask left
out) is decoded with. Keyed by the two endpoints, not by a message's position, so that a receiver can decode what
it received whatever order messages arrive in."""


def known_by_message(held: HeldMasks | None, received: Route) -> KnownMasks | None:
    """The body's per-message view of `held` for the messages of `received` (in their received order)."""
    if held is None:
        return None
    return lambda p: held(int(received.senders[p]), int(received.receivers[p]))


@dataclass(frozen=True)
class Delivery:
    """What the receivers of a batch got: the route as they read it from the frames, and the bodies."""

    route: Route
    body: Body


class Transport(ABC):
    """Moves messages between endpoints and counts them in `ledger`.

    `addresses[r]` is the device id of the device the runtime stores in row r (routes name devices by row); frames
    carry ids, so a receiver learns who sent a message from the message itself.
    """

    name: str = ""

    def __init__(self, ledger: Ledger, addresses: torch.Tensor | None = None) -> None:
        self.ledger = ledger
        self.addresses = addresses
        self._rows: torch.Tensor | None = None  # device id -> row (the inverse of `addresses`)
        if addresses is not None and len(addresses):
            self._rows = torch.full((int(addresses.max()) + 1,), -1, dtype=torch.long)
            self._rows[addresses] = torch.arange(len(addresses))

    def send(self, route: Route, body: Body, known: HeldMasks | None = None) -> Delivery:
        """Point to point; `known(sender, receiver)` is the sender's mask that receiver holds (for bodies that
        leave it out)."""
        return self._deliver(route, body, known)

    def gather(self, route: Route, body: Body) -> Delivery:
        """Uploads to aggregators (edges or the server)."""
        if route.receiver_role == Role.DEVICE:
            raise ValueError("gather delivers to an aggregator, not to devices")
        return self._deliver(route, body, None)

    def broadcast(self, route: Route, body: Body) -> Delivery:
        """Downloads from aggregators (edges or the server)."""
        if route.sender_role == Role.DEVICE:
            raise ValueError("broadcast sends from an aggregator, not from a device")
        return self._deliver(route, body, None)

    @abstractmethod
    def _deliver(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery: ...


class DirectTransport(Transport):
    name = "direct"

    def _deliver(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery:
        if len(body) != len(route):
            raise ValueError(f"{len(route)} messages routed but {len(body)} bodies given")
        self.ledger.record(route, codec.framed(body.sizes()))
        return Delivery(route, body.received())


class LoopbackTransport(Transport):
    name = "loopback"

    def carry(self, message: bytes) -> bytes:
        """The one place bytes cross from sender to receiver (a test may wrap it to watch every message)."""
        return message

    def _address(self, role: Role, index: int) -> int:
        return int(self.addresses[index]) if role == Role.DEVICE and self.addresses is not None else index

    def _local(self, role: Role, ids: list[int]) -> torch.Tensor:
        tensor = torch.tensor(ids, dtype=torch.long)
        if role != Role.DEVICE or self._rows is None or len(ids) == 0:
            return tensor
        if int(tensor.max()) >= len(self._rows):
            raise ValueError("a message names a device this runtime does not hold")
        local = self._rows[tensor]
        if bool((local < 0).any()):
            raise ValueError("a message names a device this runtime does not hold")
        return local

    def _deliver(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery:
        if len(body) != len(route):
            raise ValueError(f"{len(route)} messages routed but {len(body)} bodies given")
        senders, receivers = route.senders.tolist(), route.receivers.tolist()
        frames, blobs, lengths = [], [], []
        for p in range(len(route)):
            header = codec.Frame(int(route.kind), int(route.sender_role), self._address(route.sender_role, senders[p]),
                                 int(route.receiver_role), self._address(route.receiver_role, receivers[p]),
                                 route.round)
            message = self.carry(codec.frame(header, body.encode(p)))
            lengths.append(len(message))
            parsed, blob = codec.unframe(message)
            frames.append(parsed)
            blobs.append(blob)
        self.ledger.record(route, torch.tensor(lengths, dtype=torch.int64))
        if frames and any((f.kind, f.sender_role, f.receiver_role, f.round) !=
                          (int(route.kind), int(route.sender_role), int(route.receiver_role), route.round)
                          for f in frames):
            raise ValueError("a message arrived with another kind, role or round than it was sent with")
        received = Route(Kind(route.kind), route.round, route.sender_role, route.receiver_role,
                         self._local(route.sender_role, [f.sender for f in frames]),
                         self._local(route.receiver_role, [f.receiver for f in frames]))
        return Delivery(received, body.decode(blobs, known_by_message(known, received)))


TRANSPORTS: dict[str, type[Transport]] = {"direct": DirectTransport, "loopback": LoopbackTransport}


def make_transport(name: str, ledger: Ledger, addresses: torch.Tensor | None = None) -> Transport:
    try:
        return TRANSPORTS[name](ledger, addresses)
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (choose from {', '.join(TRANSPORTS)})") from None


__all__ = ["TRANSPORTS", "Delivery", "DirectTransport", "HeldMasks", "LoopbackTransport", "Transport",
           "known_by_message", "make_transport"]
