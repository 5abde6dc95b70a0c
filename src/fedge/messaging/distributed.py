"""The `torch.distributed` transport: the same messages, between processes (gloo on CPU).

Devices are sharded over the ranks in contiguous blocks of device ids (`Placement`); each rank trains and speaks
for its own devices only. Aggregators (FedAvg's server, hfl's edges and cloud) are *replicated*: every rank holds a
copy that receives every upload and computes the same aggregate in the same order, so a download never has to
cross ranks. What crosses ranks is therefore exactly what a device sends to a device or an aggregator hosted
elsewhere:

* a batch of device messages is encoded on the sender's rank (frame + body, as on the loopback transport); the
  ranks first swap how many messages and bytes each sends each other (one `all_to_all_single` of counts), then the
  messages themselves go point to point (`isend`/`irecv`) to the rank that hosts the receiver — or to every rank
  when the receiver is a (replicated) aggregator;
* a message an aggregator sends is computed identically on every rank and delivered locally to the receivers hosted
  there.

Every batch is a collective: all ranks call `send` / `gather` / `broadcast` in the same order (they run the same
round loop). A device's messages computed on a rank that does not host it are dropped there — that rank's copy of a
remote device is never read by anyone. Received messages are delivered ordered by receiver, then sender, as the
in-process transports deliver the routes of the round loop. The ledger of a rank counts the messages it sent (an
aggregator's messages on rank 0 only), so the ranks' ledgers sum to the single-process ledger
(`fedge.runtimes.distributed.merged_ledger`); what torch.distributed carried besides the messages themselves (the
counts and per-message lengths) is counted in `overhead_bytes`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fedge.core import codec
from fedge.messaging.bodies import Body
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Kind, Role, Route
from fedge.messaging.transport import Delivery, HeldMasks, Transport, known_by_message


@dataclass(frozen=True)
class Placement:
    """Which rank hosts which device: `world` contiguous blocks of device ids, the first N mod world one longer."""

    num_devices: int
    world: int
    rank: int

    def __post_init__(self) -> None:
        if not 1 <= self.world <= self.num_devices:
            raise ValueError(f"{self.world} processes for {self.num_devices} devices: every process needs a device")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")

    @property
    def owner(self) -> torch.Tensor:
        """[N] long: the rank hosting each device id."""
        blocks = torch.tensor_split(torch.arange(self.num_devices), self.world)
        owner = torch.empty(self.num_devices, dtype=torch.long)
        for rank, block in enumerate(blocks):
            owner[block] = rank
        return owner

    @property
    def local(self) -> torch.Tensor:
        """[N] bool: the devices this rank hosts."""
        return self.owner == self.rank


class DistributedTransport(Transport):
    """Messages between the ranks of the default process group (see the module docstring); device rows are ids."""

    name = "torch.distributed"

    def __init__(self, ledger: Ledger, placement: Placement) -> None:
        super().__init__(ledger, None)
        self.placement = placement
        self.owner = placement.owner
        self.overhead_bytes = 0  # counts and lengths handed to torch.distributed besides the messages
        self.seconds = 0.0  # wall time spent in this transport: encoding, swapping, decoding (communication share)

    def _deliver(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery:
        started = time.perf_counter()
        try:
            return self._deliver_timed(route, body, known)
        finally:
            self.seconds += time.perf_counter() - started

    def _deliver_timed(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery:
        if len(body) != len(route):
            raise ValueError(f"{len(route)} messages routed but {len(body)} bodies given")
        if route.sender_role != Role.DEVICE:
            return self._replicated(route, body, known)
        me, world = self.placement.rank, self.placement.world
        mine = torch.nonzero(self.owner[route.senders] == me).flatten().tolist()
        outgoing: list[list[bytes]] = [[] for _ in range(world)]
        lengths = []
        for p in mine:
            message = codec.frame(self._frame(route, p), body.encode(p))
            lengths.append(len(message))
            if route.receiver_role == Role.DEVICE:
                outgoing[int(self.owner[route.receivers[p]])].append(message)
            else:  # a replicated aggregator: every rank's copy receives it
                for rank in range(world):
                    outgoing[rank].append(message)
        sent = torch.tensor(mine, dtype=torch.long)
        self.ledger.record(Route(route.kind, route.round, route.sender_role, route.receiver_role,
                                 route.senders[sent], route.receivers[sent]), torch.tensor(lengths, dtype=torch.int64))
        return self._receive(route, body, known, self._exchange(outgoing))

    def _frame(self, route: Route, p: int) -> codec.Frame:
        return codec.Frame(int(route.kind), int(route.sender_role), int(route.senders[p]), int(route.receiver_role),
                           int(route.receivers[p]), route.round)

    def _exchange(self, outgoing: list[list[bytes]]) -> list[bytes]:
        """Swap the messages: counts by all-to-all, then lengths and payloads point to point. Returns what this
        rank received, by source rank, each source's messages in the order it sent them."""
        me, world = self.placement.rank, self.placement.world
        counts = torch.tensor([len(m) for m in outgoing], dtype=torch.int64)
        incoming_counts = torch.empty(world, dtype=torch.int64)
        dist.all_to_all_single(incoming_counts, counts)
        self.overhead_bytes += 8 * world
        requests, buffers = [], {}
        for rank in range(world):
            if rank == me or not outgoing[rank]:
                continue
            lengths = torch.tensor([len(m) for m in outgoing[rank]], dtype=torch.int64)
            payload = torch.frombuffer(bytearray(b"".join(outgoing[rank])), dtype=torch.uint8)
            requests += [dist.isend(lengths, rank, tag=0), dist.isend(payload, rank, tag=1)]
            self.overhead_bytes += 8 * len(lengths)
        for rank in range(world):
            if rank == me or int(incoming_counts[rank]) == 0:
                continue
            lengths = torch.empty(int(incoming_counts[rank]), dtype=torch.int64)
            dist.recv(lengths, rank, tag=0)
            payload = torch.empty(int(lengths.sum()), dtype=torch.uint8)
            requests.append(dist.irecv(payload, rank, tag=1))
            buffers[rank] = (lengths, payload)
        for request in requests:
            request.wait()
        received: list[bytes] = []
        for rank in range(world):
            if rank == me:
                received += outgoing[me]
            elif rank in buffers:
                lengths, payload = buffers[rank]
                data, start = payload.numpy().tobytes(), 0
                for length in lengths.tolist():
                    received.append(data[start:start + length])
                    start += length
        return received

    def _receive(self, route: Route, body: Body, known: HeldMasks | None, messages: list[bytes]) -> Delivery:
        """Parse frames, keep the messages for receivers hosted here, order them by (receiver, sender)."""
        frames, blobs = [], []
        for message in messages:
            frame, blob = codec.unframe(message)
            if (frame.kind, frame.sender_role, frame.receiver_role, frame.round) != \
                    (int(route.kind), int(route.sender_role), int(route.receiver_role), route.round):
                raise ValueError("a message arrived with another kind, role or round than the batch it belongs to")
            frames.append(frame)
            blobs.append(blob)
        order = sorted(range(len(frames)), key=lambda k: (frames[k].receiver, frames[k].sender, k))
        received = Route(Kind(route.kind), route.round, route.sender_role, route.receiver_role,
                         torch.tensor([frames[k].sender for k in order], dtype=torch.long),
                         torch.tensor([frames[k].receiver for k in order], dtype=torch.long))
        return Delivery(received, body.decode([blobs[k] for k in order], known_by_message(known, received)))

    def _replicated(self, route: Route, body: Body, known: HeldMasks | None) -> Delivery:
        """An aggregator's batch: every rank computed the same messages; each delivers those for its receivers
        (all of them when the receivers are aggregators too). Counted once, on rank 0."""
        if self.placement.rank == 0:
            self.ledger.record(route, codec.framed(body.sizes()))
        if route.receiver_role == Role.DEVICE:
            keep = torch.nonzero(self.owner[route.receivers] == self.placement.rank).flatten().tolist()
        else:
            keep = list(range(len(route)))
        messages = [codec.frame(self._frame(route, p), body.encode(p)) for p in keep]
        frames = [codec.unframe(m) for m in messages]
        received = Route(Kind(route.kind), route.round, route.sender_role, route.receiver_role,
                         torch.tensor([f.sender for f, _ in frames], dtype=torch.long),
                         torch.tensor([f.receiver for f, _ in frames], dtype=torch.long))
        return Delivery(received, body.decode([b for _, b in frames], known_by_message(known, received)))


__all__ = ["DistributedTransport", "Placement"]
