"""Message bodies of federated recommendation, on the `fedge.messaging.Body` contract.

* `RowsBody` — message b carries client b's rows of the shared model (`fedge.recsys.wire.ClientRows`): its upload
  (deltas after local training) or, in `interacted` mode, its download (the current rows of the items it asked
  for, plus the dense tensors). `sizes()` are the codec's encoded lengths, `encode(b)` the codec vector,
  `received()` the rows themselves (the direct transport's zero-copy path; rounded to half precision when the
  payload is fp16, as decoding would), and `decode(blobs)` rebuilds equivalent rows from the bytes alone: pair rows
  from each decoded mask (every item, with its possibly zero value, for a dense `full` upload).
* `ItemRequests` — message b: "send me the rows of these items", the item ids client b will touch this round,
  ascending (an aggregator cannot know them otherwise). Body: count (u32), then the ids as u16 (catalogues of at
  most 65,536 items, as the codec's index layout) or u32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedge.core import codec
from fedge.messaging.bodies import KnownMasks
from fedge.recsys.wire import ClientRows


@dataclass(frozen=True)
class RowsBody:
    """One message per client of `rows` (uploads or interacted downloads)."""

    rows: ClientRows
    value_dtype: codec.ValueDtype = "fp32"

    def __len__(self) -> int:
        return self.rows.num_clients

    def sizes(self) -> torch.Tensor:
        return self.rows.sizes(self.value_dtype)

    def encode(self, p: int) -> bytes:
        return self.rows.encode(p, self.value_dtype)

    def received(self) -> RowsBody:
        return self if self.value_dtype == "fp32" else RowsBody(self.rows.rounded(self.value_dtype), self.value_dtype)

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> RowsBody:
        return RowsBody(self.rows.like(list(blobs)), self.value_dtype)


@dataclass(frozen=True)
class ItemRequests:
    """Message p asks for the rows of items `items[ptr[p]:ptr[p + 1]]` of a catalogue of `num_items`."""

    num_items: int
    ptr: torch.Tensor  # [P + 1] long
    items: torch.Tensor  # [n] long

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def counts(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def sizes(self) -> torch.Tensor:
        return codec.id_list_sizes(self.counts(), self.num_items)

    def encode(self, p: int) -> bytes:
        return codec.encode_id_list(self.items[int(self.ptr[p]): int(self.ptr[p + 1])], self.num_items)

    def received(self) -> ItemRequests:
        return self

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> ItemRequests:
        parts = [codec.decode_id_list(blob, self.num_items) for blob in blobs]
        counts = [len(ids) for ids in parts]
        ptr = torch.zeros(len(blobs) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)
        return ItemRequests(self.num_items, ptr, torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long))


__all__ = ["ItemRequests", "RowsBody"]
