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

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedge.core import codec
from fedge.messaging.bodies import KnownMasks
from fedge.recsys.wire import ClientRows

COUNT = struct.Struct("<I")  # the number of item ids in a request


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


def _id_dtype(num_items: int) -> type[np.unsignedinteger]:
    return np.uint16 if num_items <= 65536 else np.uint32


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
        return COUNT.size + self.counts() * np.dtype(_id_dtype(self.num_items)).itemsize

    def encode(self, p: int) -> bytes:
        ids = self.items[int(self.ptr[p]): int(self.ptr[p + 1])].numpy().astype(_id_dtype(self.num_items))
        return COUNT.pack(len(ids)) + ids.tobytes()

    def received(self) -> ItemRequests:
        return self

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> ItemRequests:
        dtype = _id_dtype(self.num_items)
        width = np.dtype(dtype).itemsize
        parts, counts = [], []
        for blob in blobs:
            if len(blob) < COUNT.size:
                raise ValueError(f"an item request of {len(blob)} bytes is shorter than its count")
            (count,) = COUNT.unpack_from(blob)
            if len(blob) != COUNT.size + count * width:
                raise ValueError(f"an item request of {len(blob)} bytes does not hold {count} item ids")
            ids = torch.from_numpy(np.frombuffer(blob, dtype=dtype, offset=COUNT.size).astype(np.int64))
            if count and int(ids.max()) >= self.num_items:
                raise ValueError("an item request names an item outside the catalogue")
            parts.append(ids)
            counts.append(count)
        ptr = torch.zeros(len(blobs) + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)
        return ItemRequests(self.num_items, ptr, torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long))


__all__ = ["COUNT", "ItemRequests", "RowsBody"]
