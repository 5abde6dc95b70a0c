"""What leaves a client, what it costs, and how the server averages it.

A client's payload is one flat vector over the *shared* model only: the item table `[I, di]` (row-major) followed by
the dense shared tensors. There is no slot for the user row or the ratings: they cannot leave the device.

Upload modes (Chai et al. 2020 call them "partial" and "full" FedMF):

* `interacted`: only the rows of the items the client touched this round (its positives plus its sampled
  negatives) are kept in the mask. Cheap, but the mask tells the server which items were touched.
* `full`: the whole catalogue is sent densely, untouched rows as zero deltas. Every client's payload has the same
  size and layout, so sizes and layouts reveal nothing; hiding the *values* of untouched rows from the server needs
  secure aggregation on top (Bonawitz et al. 2017), which fedge does not simulate. The server then averages each
  item over all clients of the round (what secure aggregation of the sums lets it compute).

Bytes are `len(codec.encode(...))` of the real payload (`payloads: encode`, where the server aggregates the decoded
bytes) or the codec's `encoded_sizes`, tested equal to it (`payloads: count`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.core.aggregation import masked_average
from fedge.core.codec import decode, encode, encoded_sizes

CHUNK_FLOATS = 1 << 23  # clients are densified this many floats at a time when averaging


@dataclass
class Uploads:
    """The deltas each client of a round computed for the shared model (pair rows + per-client dense deltas)."""

    num_clients: int
    num_items: int
    pair_client: torch.Tensor  # [P] client of each item row, sorted
    pair_item: torch.Tensor  # [P]
    item_delta: torch.Tensor  # [P, di]
    dense_delta: dict[str, torch.Tensor]  # name -> [B, ...]
    mode: str = "interacted"
    loss: float = 0.0  # mean local training loss (reported, never sent)

    @property
    def item_dim(self) -> int:
        return self.item_delta.shape[1]

    @property
    def length(self) -> int:
        """d: length of one payload vector."""
        return self.num_items * self.item_dim + sum(t[0].numel() for t in self.dense_delta.values())

    def dense_width(self) -> int:
        return self.length - self.num_items * self.item_dim

    def kept_counts(self) -> torch.Tensor:
        """nnz of each client's payload."""
        if self.mode == "full":
            return torch.full((self.num_clients,), self.length, dtype=torch.int64)
        rows = torch.bincount(self.pair_client, minlength=self.num_clients)
        return rows * self.item_dim + self.dense_width()

    def dense_block(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Clients lo..hi-1 as dense (values [c, d], mask [c, d]) — exactly what their payloads carry."""
        c, width = hi - lo, self.item_dim
        table = torch.zeros(c, self.num_items, width)
        touched = torch.zeros(c, self.num_items, dtype=torch.bool)
        sel = (self.pair_client >= lo) & (self.pair_client < hi)
        table[self.pair_client[sel] - lo, self.pair_item[sel]] = self.item_delta[sel]
        touched[self.pair_client[sel] - lo, self.pair_item[sel]] = True
        if self.mode == "full":
            touched[:] = True
        dense = [t[lo:hi].reshape(c, -1) for t in self.dense_delta.values()]
        values = torch.cat([table.reshape(c, -1), *dense], dim=1)
        mask = torch.cat([touched.unsqueeze(2).expand(c, self.num_items, width).reshape(c, -1),
                          torch.ones(c, self.dense_width(), dtype=torch.bool)], dim=1)
        return values, mask

    def payloads(self, value_dtype: str = "fp32", lo: int = 0, hi: int | None = None) -> list[bytes]:
        """The encoded payload of each client lo..hi-1, as it would be sent."""
        hi = self.num_clients if hi is None else hi
        values, mask = self.dense_block(lo, hi)
        if self.mode == "full":
            return [encode(v, None, value_dtype) for v in values]
        return [encode(v, m, value_dtype) for v, m in zip(values, mask, strict=True)]

    def upload_bytes(self, value_dtype: str = "fp32") -> torch.Tensor:
        """Bytes of each client's payload, from the codec's size formula."""
        return encoded_sizes(self.kept_counts(), self.length, value_dtype, sparse=self.mode != "full")


def chunk_size(length: int) -> int:
    return max(1, CHUNK_FLOATS // max(length, 1))


def _scatter_average(uploads: Uploads, value_dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Same (mean, count) as `masked_average` over the dense blocks, by scatter-adding the pair rows directly.

    Used by `payloads: count`, where building [clients, I, di] blocks would dominate the round; a test checks that
    both paths agree.
    """
    width, items, clients = uploads.item_dim, uploads.num_items, uploads.num_clients
    rows = uploads.item_delta.half().float() if value_dtype == "fp16" else uploads.item_delta
    item_sum = torch.zeros(items, width).index_add_(0, uploads.pair_item, rows)
    if uploads.mode == "full":
        item_count = torch.full((items,), float(clients))
    else:
        item_count = torch.bincount(uploads.pair_item, minlength=items).to(torch.float32)
    dense = [t.reshape(clients, -1) for t in uploads.dense_delta.values()]
    dense_t = torch.cat(dense, dim=1) if dense else torch.zeros(clients, 0)
    if value_dtype == "fp16":
        dense_t = dense_t.half().float()
    total = torch.cat([item_sum.reshape(-1), dense_t.sum(0)])
    count = torch.cat([item_count.repeat_interleave(width), torch.full((dense_t.shape[1],), float(clients))])
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total)), count


def aggregate(uploads: Uploads, via_wire: bool = True, value_dtype: str = "fp32"
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
    """Average the clients' deltas coordinate-wise over the clients whose payload kept that coordinate.

    Returns (item mean [I, di], item count [I], dense means, total upload bytes). With `via_wire` every payload is
    encoded, the server decodes them and averages with `fedge.core.aggregation.masked_average` (clients densified a
    chunk at a time); otherwise the pair rows are scatter-added (same result) and the bytes come from the codec's
    size formula. Each item is averaged only over the clients that touched it (`interacted`) or over all clients of
    the round (`full`).
    """
    if via_wire:
        d = uploads.length
        total = torch.zeros(d)
        count = torch.zeros(d)
        sent = 0
        step = chunk_size(d)
        for lo in range(0, uploads.num_clients, step):
            blobs = uploads.payloads(value_dtype, lo, min(lo + step, uploads.num_clients))
            sent += sum(len(b) for b in blobs)
            decoded = [decode(b) for b in blobs]
            part, n = masked_average(torch.stack([x.values for x in decoded]), torch.stack([x.mask for x in decoded]))
            total += part * n
            count += n
        mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    else:
        mean, count = _scatter_average(uploads, value_dtype)
        sent = int(uploads.upload_bytes(value_dtype).sum())
    width, items = uploads.item_dim, uploads.num_items
    item_mean = mean[: items * width].reshape(items, width)
    item_count = count[: items * width].reshape(items, width)[:, 0]
    dense, offset = {}, items * width
    for name, t in uploads.dense_delta.items():
        size = t[0].numel()
        dense[name] = mean[offset: offset + size].reshape(t.shape[1:])
        offset += size
    return item_mean, item_count, dense, sent


def download_bytes(uploads: Uploads, value_dtype: str = "fp32") -> int:
    """Server → clients: each client fetches the rows it will touch (interacted) or the whole model (full)."""
    return int(encoded_sizes(uploads.kept_counts(), uploads.length, value_dtype, sparse=uploads.mode != "full").sum())


__all__ = ["Uploads", "aggregate", "download_bytes"]
