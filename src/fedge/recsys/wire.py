"""What crosses between a recommendation client and its aggregator, as rows of the shared model, and how the
aggregator sums what it received.

A client's message is one flat vector over the *shared* model only: the item table `[I, di]` (row-major) followed by
the dense shared tensors. There is no slot for the user row or the ratings: they cannot leave the device.
`ClientRows` holds such vectors for many clients at once without densifying them: the item rows each client keeps
(one row per (client, item) pair, client-major) plus every client's dense tensors. The same structure carries

* uploads (`Uploads`): each client's deltas of the shared model after local training, and
* downloads in `interacted` mode: the current rows of the items each client asked for, with the dense tensors.

Upload modes (Chai et al. 2020 call them "partial" and "full" FedMF):

* `interacted`: only the rows of the items the client touched this round (its positives plus its sampled
  negatives) are kept in the mask. Cheap, but the mask tells the server which items were touched.
* `full`: the whole catalogue is sent densely, untouched rows as zero deltas. Every client's payload has the same
  size and layout, so sizes and layouts reveal nothing; hiding the *values* from the server needs secure
  aggregation on top (Bonawitz et al. 2017): `secure.aggregation: secagg | secagg+` (`fedge.recsys.secure`), which
  masks whole-catalogue vectors with a touched indicator per item. Without it the server averages each item over
  all clients of the round.

Message bodies and their bytes: `fedge.recsys.bodies`; the exchange itself: `fedge.recsys.exchange`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from fedge.core import codec

CHUNK_FLOATS = 1 << 23  # messages of this many floats (summed over clients) are built or decoded at a time


@dataclass
class ClientRows:
    """Rows of the shared model per client: pair rows (client-major, items ascending) + per-client dense tensors."""

    num_clients: int
    num_items: int
    pair_client: torch.Tensor  # [P] client of each item row, sorted
    pair_item: torch.Tensor  # [P]
    item_rows: torch.Tensor  # [P, di]
    dense: dict[str, torch.Tensor]  # name -> [B, ...] (an expanded view when every client holds the same tensor)
    mode: str = "interacted"
    loss: float = 0.0  # uploads: mean local training loss (reported by the simulation, never sent)
    users: torch.Tensor | None = None  # [B] the clients' user ids (who sends: the routes' senders, not a payload)
    # the round's clients over every process of a distributed run (its uploads go in batches cut over them); None:
    # `users` are all of them
    everyone: torch.Tensor | None = None

    @property
    def item_dim(self) -> int:
        return self.item_rows.shape[1]

    @property
    def length(self) -> int:
        """d: length of one message vector."""
        return self.num_items * self.item_dim + self.dense_width()

    def dense_width(self) -> int:
        return sum(t.shape[1:].numel() for t in self.dense.values())  # also when no client is held here

    @cached_property
    def ptr(self) -> torch.Tensor:
        """[B + 1] CSR offsets: client b's pair rows are ptr[b]:ptr[b + 1]."""
        return torch.searchsorted(self.pair_client, torch.arange(self.num_clients + 1))

    def kept_counts(self) -> torch.Tensor:
        """nnz of each client's vector."""
        if self.mode == "full":
            return torch.full((self.num_clients,), self.length, dtype=torch.int64)
        return (self.ptr[1:] - self.ptr[:-1]) * self.item_dim + self.dense_width()

    def sizes(self, value_dtype: codec.ValueDtype = "fp32") -> torch.Tensor:
        """[B] encoded length of each client's vector (codec size formula; equal to `len(encode(b))`)."""
        return codec.encoded_sizes(self.kept_counts(), self.length, value_dtype, sparse=self.mode != "full")

    def clients(self, lo: int, hi: int) -> ClientRows:
        """Clients lo..hi-1 (renumbered from 0), as views."""
        a, b = int(self.ptr[lo]), int(self.ptr[hi])
        return ClientRows(hi - lo, self.num_items, self.pair_client[a:b] - lo, self.pair_item[a:b],
                          self.item_rows[a:b], {k: v[lo:hi] for k, v in self.dense.items()}, self.mode, self.loss,
                          None if self.users is None else self.users[lo:hi])

    def vector(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client b's message as a dense vector and the mask of the coordinates it keeps."""
        a, z = int(self.ptr[b]), int(self.ptr[b + 1])
        items, width = self.num_items * self.item_dim, self.item_dim
        values = torch.zeros(self.length)
        values[:items].view(self.num_items, width)[self.pair_item[a:z]] = self.item_rows[a:z]
        if self.dense:
            values[items:] = torch.cat([t[b].reshape(-1) for t in self.dense.values()])
        mask = torch.ones(self.length, dtype=torch.bool)
        if self.mode != "full":
            kept = torch.zeros(self.num_items, dtype=torch.bool)
            kept[self.pair_item[a:z]] = True
            mask[:items] = kept.repeat_interleave(width)
        return values, mask

    def encode(self, b: int, value_dtype: codec.ValueDtype = "fp32") -> bytes:
        """Client b's message body: the codec's smallest sparse layout (`interacted`) or the dense one (`full`)."""
        values, mask = self.vector(b)
        if self.mode == "full":
            return codec.encode(values, None, value_dtype, sparse=False)
        return codec.encode(values, mask, value_dtype)

    def payloads(self, value_dtype: codec.ValueDtype = "fp32") -> list[bytes]:
        """Every client's message body, as it is sent."""
        return [self.encode(b, value_dtype) for b in range(self.num_clients)]

    def rounded(self, value_dtype: codec.ValueDtype) -> ClientRows:
        """The values a receiver decodes: unchanged in fp32, rounded to half precision in fp16."""
        if value_dtype == "fp32":
            return self
        return ClientRows(self.num_clients, self.num_items, self.pair_client, self.pair_item,
                          self.item_rows.half().float(), {k: v.half().float() for k, v in self.dense.items()},
                          self.mode, self.loss, self.users, self.everyone)

    def like(self, blobs: list[bytes]) -> ClientRows:
        """Decode one message body per client, laid out like this one (same catalogue, dense names and shapes):
        the kept item rows come from each decoded mask, in full mode every item (with its possibly zero value)."""
        width, items = self.item_dim, self.num_items * self.item_dim
        clients, pair_items, rows, dense = [], [], [], []
        for b, blob in enumerate(blobs):
            decoded = codec.decode(blob)
            if decoded.values.numel() != self.length:
                raise ValueError(f"a message of length {decoded.values.numel()} where {self.length} was expected")
            kept = torch.nonzero(decoded.mask[:items].view(self.num_items, width).any(dim=1)).flatten()
            pair_items.append(kept)
            rows.append(decoded.values[:items].view(self.num_items, width)[kept])
            clients.append(torch.full((len(kept),), b, dtype=torch.long))
            dense.append(decoded.values[items:].clone())  # not a view: the whole decoded vector would stay alive
        flat = torch.stack(dense) if dense else torch.zeros(0, self.dense_width())
        out, offset = {}, 0
        for name, t in self.dense.items():
            size = t.shape[1:].numel()
            out[name] = flat[:, offset: offset + size].reshape(len(blobs), *t.shape[1:])
            offset += size
        empty = torch.zeros(0, dtype=torch.long)
        return ClientRows(len(blobs), self.num_items, torch.cat(clients) if clients else empty,
                          torch.cat(pair_items) if pair_items else empty,
                          torch.cat(rows) if rows else torch.zeros(0, width), out, self.mode)


Uploads = ClientRows  # what clients upload: the deltas of the rows they touched, and of the dense tensors


def client_chunks(num_clients: int, length: int) -> list[tuple[int, int]]:
    """Client ranges whose messages hold about `CHUNK_FLOATS` floats together (bounded memory when densified)."""
    step = max(1, CHUNK_FLOATS // max(length, 1))
    return [(lo, min(lo + step, num_clients)) for lo in range(0, num_clients, step)]


@dataclass
class Aggregate:
    """The aggregator's averages: item rows over the clients that sent them (all clients in `full` mode), dense
    tensors over all clients."""

    item_mean: torch.Tensor  # [I, di]
    item_count: torch.Tensor  # [I] float
    dense_mean: dict[str, torch.Tensor]


class Accumulator:
    """Sums received uploads in arrival order (clients in order, each client's rows by item), one batch of messages
    at a time; every sum is an `index_add_`, which adds its sources one after the other, so the result does not
    depend on how the uploads were cut into batches (bitwise, tested)."""

    def __init__(self, num_items: int, item_dim: int, dense_shapes: dict[str, torch.Size], mode: str) -> None:
        self.mode = mode
        self.shapes = dense_shapes
        self.item_sum = torch.zeros(num_items, item_dim)
        self.item_count = torch.zeros(num_items)
        self.dense_sum = torch.zeros(1, sum(int(torch.Size(s).numel()) for s in dense_shapes.values()))
        self.clients = 0

    def add(self, rows: ClientRows) -> None:
        self.item_sum.index_add_(0, rows.pair_item, rows.item_rows)
        self.item_count += torch.bincount(rows.pair_item, minlength=len(self.item_count)).to(torch.float32)
        if rows.dense:
            flat = torch.cat([t.reshape(rows.num_clients, -1) for t in rows.dense.values()], dim=1)
            self.dense_sum.index_add_(0, torch.zeros(rows.num_clients, dtype=torch.long), flat)
        self.clients += rows.num_clients

    def result(self) -> Aggregate:
        count = torch.full_like(self.item_count, float(self.clients)) if self.mode == "full" else self.item_count
        mean = torch.where(count[:, None] > 0, self.item_sum / count.clamp_min(1)[:, None],
                           torch.zeros_like(self.item_sum))
        dense, offset = {}, 0
        for name, shape in self.shapes.items():
            size = int(torch.Size(shape).numel())
            dense[name] = (self.dense_sum[0, offset: offset + size] / max(self.clients, 1)).reshape(shape)
            offset += size
        return Aggregate(mean, count, dense)


def aggregate(uploads: ClientRows) -> Aggregate:
    """Average uploads as an aggregator would that received exactly these (see `Accumulator`)."""
    acc = Accumulator(uploads.num_items, uploads.item_dim, {k: v.shape[1:] for k, v in uploads.dense.items()},
                      uploads.mode)
    acc.add(uploads)
    return acc.result()


__all__ = ["CHUNK_FLOATS", "Accumulator", "Aggregate", "ClientRows", "Uploads", "aggregate", "client_chunks"]
