"""The messages between recommendation clients (devices) and their aggregator (the server, or an edge server).

One round of a client-server recommender, as it crosses the transport (`fedge.messaging`):

1. `interacted` mode: each client sends a `Kind.REQUEST` naming the items it will touch this round (its positives
   and freshly sampled negatives; `ItemRequests`), and the aggregator answers each with a `Kind.DOWNLOAD` holding
   the current rows of exactly those items plus the dense shared tensors (`RowsBody`). `full` mode: no request; each
   client downloads the whole shared model (one dense `Models` vector, the same for everyone).
2. The client trains a working copy built from what it downloaded (`Working`): on the loopback transport from the
   decoded bytes, on the direct one from the same tensors without encoding.
3. Each client uploads its deltas (`Kind.MODEL`, `RowsBody`), gathered by the aggregator, which sums what it
   received (`fedge.recsys.wire.Accumulator`).

Clients are numbered by user id (a device's row in the transport's routes). Messages that would be densified
(full-mode downloads, every decode on the loopback transport) move a chunk of clients at a time
(`fedge.recsys.wire.client_chunks`), so the catalogue times all users is never held at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.core import codec
from fedge.messaging import Kind, Models, Role, Transport, route
from fedge.recsys.bodies import ItemRequests, RowsBody
from fedge.recsys.local import Pairs
from fedge.recsys.wire import Accumulator, Aggregate, ClientRows, client_chunks


@dataclass(frozen=True)
class Endpoint:
    """An aggregator: its role and its index among that role's endpoints."""

    role: Role
    index: int = 0


SERVER = Endpoint(Role.SERVER, 0)


@dataclass
class Working:
    """What a round's clients hold after downloading: one item row per (client, item) pair and dense `[B, ...]`."""

    item_rows: torch.Tensor  # [P, di], aligned with the round's pairs
    dense: dict[str, torch.Tensor]  # name -> [B, ...]


def batches(users: torch.Tensor, everyone: torch.Tensor | None, length: int) -> list[tuple[int, int, int, int]]:
    """The batches a round's messages of `length` floats go in: `client_chunks` cut over the round's clients on every
    process (`everyone`; None: `users` are all of them), so that the processes of a distributed run send the same
    batches (each is a collective) in the same order. Each batch is (lo, hi) over `everyone` and (a, b) over
    `users`, the clients hosted here (a subsequence of `everyone`)."""
    if everyone is None:
        return [(lo, hi, lo, hi) for lo, hi in client_chunks(len(users), length)]
    at = torch.searchsorted(everyone, users)  # each hosted client's position in the whole round (both sorted)
    chunks = client_chunks(len(everyone), length)
    bounds = torch.searchsorted(at, torch.tensor([lo for lo, _ in chunks] + [len(everyone)])).tolist()
    return [(lo, hi, bounds[k], bounds[k + 1]) for k, (lo, hi) in enumerate(chunks)]


class ClientServer:
    """Requests, downloads and uploads of one round between `users` and an aggregator, over `transport`."""

    def __init__(self, transport: Transport, value_dtype: codec.ValueDtype, mode: str) -> None:
        self.transport = transport
        self.value_dtype = value_dtype
        self.mode = mode

    def download(self, shared: dict[str, torch.Tensor], users: torch.Tensor, pairs: Pairs, rnd: int,
                 at: Endpoint = SERVER, everyone: torch.Tensor | None = None) -> Working:
        """The clients' downloads of the aggregator's model `shared` (item table first, then dense tensors).
        `everyone`: the round's clients on every process of a distributed run (`users` are those hosted here)."""
        if self.mode == "full":
            return self._download_full(shared, users, pairs, rnd, at, everyone)
        return self._download_rows(shared, users, pairs, rnd, at)

    def _download_rows(self, shared: dict[str, torch.Tensor], users: torch.Tensor, pairs: Pairs, rnd: int,
                       at: Endpoint) -> Working:
        num_items = shared["item"].shape[0]
        ptr = torch.searchsorted(pairs.client, torch.arange(len(users) + 1))
        asked = self.transport.send(route(Kind.REQUEST, rnd, Role.DEVICE, at.role, users, at.index),
                                    ItemRequests(num_items, ptr, pairs.item))
        requests = asked.body
        assert isinstance(requests, ItemRequests)
        # The aggregator answers each request with the rows it names (requesters in the order they arrived).
        askers = len(requests)
        dense = {k: v.unsqueeze(0).expand(askers, *v.shape) for k, v in shared.items() if k != "item"}
        answer = ClientRows(askers, num_items, torch.repeat_interleave(torch.arange(askers), requests.counts()),
                            requests.items, shared["item"][requests.items], dense, "interacted")
        got = self.transport.broadcast(route(Kind.DOWNLOAD, rnd, at.role, Role.DEVICE, at.index, asked.route.senders),
                                       RowsBody(answer, self.value_dtype))
        rows = got.body
        assert isinstance(rows, RowsBody)
        if not (torch.equal(got.route.receivers, users) and torch.equal(rows.rows.pair_item, pairs.item)):
            raise ValueError("a client downloaded other rows than it asked for")
        return Working(rows.rows.item_rows, rows.rows.dense)

    def _download_full(self, shared: dict[str, torch.Tensor], users: torch.Tensor, pairs: Pairs, rnd: int,
                       at: Endpoint, everyone: torch.Tensor | None) -> Working:
        names = [k for k in shared if k != "item"]
        num_items, width = shared["item"].shape
        items = num_items * width
        flat = torch.cat([shared[k].reshape(-1) for k in ["item", *names]])
        item_rows = torch.empty(len(pairs.item), width)
        dense_flat = torch.empty(len(users), len(flat) - items)
        ptr = torch.searchsorted(pairs.client, torch.arange(len(users) + 1))
        receivers = users if everyone is None else everyone
        for lo, hi, here, end in batches(users, everyone, len(flat)):
            # sent to every client of the batch; each process receives the messages of the clients it hosts
            got = self.transport.broadcast(route(Kind.DOWNLOAD, rnd, at.role, Role.DEVICE, at.index,
                                                 receivers[lo:hi]),
                                           Models(flat[None, :], torch.zeros(hi - lo, dtype=torch.long),
                                                  value_dtype=self.value_dtype))
            body = got.body
            assert isinstance(body, Models)
            if not torch.equal(got.route.receivers, users[here:end]):
                raise ValueError("a download reached another client than it was sent to")
            a, b = int(ptr[here]), int(ptr[end])
            table = body.values[:, :items].reshape(-1, num_items, width)
            item_rows[a:b] = table[body.slot[pairs.client[a:b] - here], pairs.item[a:b]]
            dense_flat[here:end] = body.values[:, items:].index_select(0, body.slot)
        dense, offset = {}, 0
        for k in names:
            size = shared[k].numel()
            dense[k] = dense_flat[:, offset: offset + size].reshape(len(users), *shared[k].shape)
            offset += size
        return Working(item_rows, dense)

    def upload(self, uploads: ClientRows, rnd: int, at: Endpoint = SERVER) -> Aggregate:
        """Every client's upload (sent by `uploads.users`) gathered by the aggregator, which averages what it
        received."""
        return self.gather(uploads, rnd, at).result()

    def gather(self, uploads: ClientRows, rnd: int, at: Endpoint = SERVER) -> Accumulator:
        """Every client's upload gathered by the aggregator, summed (user-level DP noises the sums itself)."""
        users = uploads.users
        assert users is not None, "uploads name the users that send them"
        acc = Accumulator(uploads.num_items, uploads.item_dim, {k: v.shape[1:] for k, v in uploads.dense.items()},
                          uploads.mode)
        for _, _, lo, hi in batches(users, uploads.everyone, uploads.length):
            got = self.transport.gather(route(Kind.MODEL, rnd, Role.DEVICE, at.role, users[lo:hi], at.index),
                                        RowsBody(uploads.clients(lo, hi), self.value_dtype))
            body = got.body
            assert isinstance(body, RowsBody)
            acc.add(body.rows)
        return acc


__all__ = ["SERVER", "ClientServer", "Endpoint", "Working"]
