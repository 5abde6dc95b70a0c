"""Message bodies, frames, the two transports and the ledger."""

from __future__ import annotations

import pytest
import torch

from fedge.core import codec
from fedge.messaging import (
    DirectTransport,
    Kind,
    Ledger,
    Link,
    LoopbackTransport,
    Models,
    Requests,
    Role,
    link_of,
    route,
)


def bodies() -> Models:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 500, generator=g)
    masks = torch.rand(3, 500, generator=g) < torch.tensor([[1.0], [0.5], [0.02]])
    values = torch.where(masks, values, 0.0)
    slot = torch.tensor([0, 1, 2, 1, 2])
    known = torch.tensor([False, False, True, True, False])
    return Models(values, slot, masks, "fp32", known)


def test_sizes_are_the_encoded_lengths_in_every_layout() -> None:
    body = bodies()
    assert [len(body.encode(p)) for p in range(len(body))] == body.sizes().tolist()
    layouts = {codec.layout_of(body.encode(p)) for p in range(len(body))}
    assert layouts == {codec.DENSE, codec.BITMAP, codec.INDEX, codec.CACHED}
    half = Models(body.values, body.slot, body.masks, "fp16")
    assert [len(half.encode(p)) for p in range(len(half))] == half.sizes().tolist()
    requests = Requests(3, torch.tensor([-1, 0, 7]))
    assert [len(requests.encode(p)) for p in range(3)] == requests.sizes().tolist() == [4, 4, 4]
    assert Requests(2).sizes().tolist() == [0, 0]


def test_a_dense_layout_is_used_only_when_nothing_is_pruned() -> None:
    values = torch.ones(1000)
    mask = torch.ones(1000, dtype=torch.bool)
    mask[0] = False  # 99.9% dense: a dense body would cost less, but could not say which coordinate is pruned
    payload = codec.encode(values * mask, mask)
    assert codec.layout_of(payload) != codec.DENSE
    assert torch.equal(codec.decode(payload).mask, mask)


@pytest.mark.parametrize("value_dtype", ["fp32", "fp16"])
def test_loopback_receivers_read_what_direct_receivers_read(value_dtype: str) -> None:
    body = bodies()
    body = Models(body.values, body.slot, body.masks, value_dtype, body.mask_known)
    message_route = route(Kind.MODEL, 3, Role.DEVICE, Role.DEVICE, torch.tensor([0, 1, 2, 1, 2]),
                          torch.tensor([4, 4, 3, 0, 1]))
    held = {(int(message_route.senders[p]), int(message_route.receivers[p])): body.masks[int(body.slot[p])]
            for p in range(len(body))}  # (sender, receiver) -> the mask that receiver holds

    def known(sender: int, receiver: int) -> torch.Tensor:
        return held[(sender, receiver)]

    direct = DirectTransport(Ledger(5)).send(message_route, body, known=known)
    loop = LoopbackTransport(Ledger(5)).send(message_route, body, known=known)
    assert torch.equal(direct.body.rows(), loop.body.rows())
    assert torch.equal(direct.body.mask_rows(), loop.body.mask_rows())
    assert torch.equal(loop.route.senders, message_route.senders)
    assert torch.equal(loop.route.receivers, message_route.receivers)


def test_frames_carry_device_ids_and_receivers_map_them_back_to_rows() -> None:
    seen: list[codec.Frame] = []

    class Watched(LoopbackTransport):
        def carry(self, message: bytes) -> bytes:
            seen.append(codec.unframe(message)[0])
            return message

    addresses = torch.tensor([7, 3, 5, 0, 1, 2, 4, 6])  # row r holds device addresses[r]
    transport = Watched(Ledger(8), addresses)
    got = transport.send(route(Kind.REQUEST, 9, Role.DEVICE, Role.DEVICE, torch.tensor([0, 2]), torch.tensor([1, 7])),
                         Requests(2, torch.tensor([-1, 4])))
    assert [(f.sender, f.receiver, f.round, f.kind) for f in seen] == [(7, 3, 9, Kind.REQUEST), (5, 6, 9, Kind.REQUEST)]
    assert got.route.senders.tolist() == [0, 2] and got.route.receivers.tolist() == [1, 7]
    assert got.body.held_version.tolist() == [-1, 4]


def test_ledger_counts_links_kinds_and_devices() -> None:
    ledger = Ledger(4)
    transport = DirectTransport(ledger)
    up = transport.gather(route(Kind.MODEL, 1, Role.DEVICE, Role.SERVER, torch.tensor([0, 2]), 0),
                          Models.one_each(torch.ones(2, 10)))
    one = codec.framed(codec.encoded_size(10, 10, sparse=False))
    assert len(up.route) == 2 and ledger.bytes_by_link[Link.DEVICE_SERVER.value] == 2 * one == ledger.total
    assert ledger.device_sent.tolist() == [one, 0, one, 0] and ledger.round_backhaul == 2 * one
    transport.broadcast(route(Kind.DOWNLOAD, 1, Role.EDGE, Role.DEVICE, 1, torch.tensor([3])),
                        Models(torch.ones(1, 10), torch.zeros(1, dtype=torch.long)))
    assert ledger.bytes_by_link["device-edge"] == one and ledger.device_received.tolist() == [0, 0, 0, one]
    assert ledger.bytes_by_kind["model"] == 2 * one and ledger.bytes_by_kind["download"] == one
    ledger.begin_round()
    assert ledger.round_total == 0 and ledger.total == 3 * one
    with pytest.raises(ValueError):
        transport.gather(route(Kind.MODEL, 1, Role.SERVER, Role.DEVICE, 0, torch.tensor([1])),
                         Models(torch.ones(1, 10), torch.zeros(1, dtype=torch.long)))
    with pytest.raises(ValueError):
        transport.send(route(Kind.MODEL, 1, Role.DEVICE, Role.DEVICE, torch.tensor([0]), torch.tensor([1])),
                       Models.one_each(torch.ones(2, 10)))


def test_links_between_roles() -> None:
    assert link_of(Role.EDGE, Role.SERVER) == link_of(Role.SERVER, Role.EDGE) == Link.EDGE_CLOUD
    assert link_of(Role.DEVICE, Role.DEVICE) == Link.DEVICE_DEVICE
    with pytest.raises(ValueError):
        link_of(Role.SERVER, Role.SERVER)
