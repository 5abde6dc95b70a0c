"""Message bodies: what a batch of messages carries, its exact encoded length, its bytes, and what a receiver reads.

A body describes P messages at once (tensors with a leading message dimension) and offers both ways across a
transport: `received()` is what receivers read on the direct path (no encoding, the same values a decoder would
produce), `encode(p)` / `decode(blobs)` the bytes of message p and their inverse on the loopback path. `sizes()` is
the length of every body in bytes, from the codec, tested equal to `len(encode(p))`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fedge.core import codec

KnownMasks = Callable[[int], torch.Tensor]  # message p -> the sender's mask its receiver already holds


class Body(Protocol):
    def __len__(self) -> int: ...

    def sizes(self) -> torch.Tensor: ...

    def encode(self, p: int) -> bytes: ...

    def received(self) -> Body: ...

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> Body: ...


def _rounded(values: torch.Tensor, value_dtype: str) -> torch.Tensor:
    return values.half().float() if value_dtype == "fp16" else values


@dataclass(frozen=True)
class Models:
    """Model vectors: message p carries `values[slot[p]]`, kept where `masks[slot[p]]` (None: all kept, dense).

    One row of `values` may go to many receivers (a device sends the same model to each neighbour), so the direct
    path copies nothing per message. `mask_known[p]`: the receiver of message p holds this mask already, so the body
    may leave it out (the codec's cached layout).
    """

    values: torch.Tensor  # [U, d] float32
    slot: torch.Tensor  # [P] long
    masks: torch.Tensor | None = None  # [U, d] bool
    value_dtype: codec.ValueDtype = "fp32"
    mask_known: torch.Tensor | None = None  # [P] bool

    @staticmethod
    def one_each(values: torch.Tensor, masks: torch.Tensor | None = None, value_dtype: codec.ValueDtype = "fp32",
                 mask_known: torch.Tensor | None = None) -> Models:
        """Message p carries row p."""
        return Models(values, torch.arange(values.shape[0]), masks, value_dtype, mask_known)

    def __len__(self) -> int:
        return len(self.slot)

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def sizes(self) -> torch.Tensor:
        if self.masks is None:
            nnz = torch.full((len(self),), self.dim, dtype=torch.int64)
            return codec.encoded_sizes(nnz, self.dim, self.value_dtype, sparse=False)
        kept = self.masks.view(torch.uint8).sum(dim=1, dtype=torch.int64)
        return codec.encoded_sizes(kept[self.slot], self.dim, self.value_dtype, mask_known=self.mask_known)

    def encode(self, p: int) -> bytes:
        row = int(self.slot[p])
        if self.masks is None:
            return codec.encode(self.values[row], None, self.value_dtype, sparse=False)
        known = bool(self.mask_known[p]) if self.mask_known is not None else False
        return codec.encode(self.values[row], self.masks[row], self.value_dtype, mask_known=known)

    def received(self) -> Models:
        """What receivers decode, computed without encoding: values at the body's precision, zero where not kept
        (+0.0, as decoding writes it; nothing to do when every coordinate is kept)."""
        values = self.values
        if self.masks is not None and not bool(self.masks.all()):
            values = torch.where(self.masks, values, 0.0)
        return Models(_rounded(values, self.value_dtype), self.slot, self.masks, self.value_dtype)

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> Models:
        """One row per message, decoded from its bytes; cached-layout bodies take the mask their receiver holds."""
        values = torch.empty(len(blobs), self.dim)
        masks = None if self.masks is None else torch.empty(len(blobs), self.dim, dtype=torch.bool)
        for p, blob in enumerate(blobs):
            held = known(p) if known is not None and codec.layout_of(blob) == codec.CACHED else None
            decoded = codec.decode(blob, known_mask=held)
            values[p] = decoded.values
            if masks is not None:
                masks[p] = decoded.mask
        return Models(values, torch.arange(len(blobs)), masks, self.value_dtype)

    def _one_each(self) -> bool:
        return len(self.slot) == len(self.values) and torch.equal(self.slot, torch.arange(len(self.slot)))

    def rows(self) -> torch.Tensor:
        """[P, d]: the values of every message (one row per message; `values` itself when message p carries row
        p, else a gather)."""
        return self.values if self._one_each() else self.values.index_select(0, self.slot)

    def mask_rows(self) -> torch.Tensor | None:
        if self.masks is None:
            return None
        return self.masks if self._one_each() else self.masks.index_select(0, self.slot)


@dataclass(frozen=True)
class Requests:
    """Requests: "send me your model" with the version of the sender's mask the requester holds (-1: none), or,
    with `held_version` None, "send me your similarity sketch" (an empty body)."""

    count: int
    held_version: torch.Tensor | None = None  # [P] long

    def __len__(self) -> int:
        return self.count

    def sizes(self) -> torch.Tensor:
        size = 0 if self.held_version is None else codec.VERSION.size
        return torch.full((self.count,), size, dtype=torch.int64)

    def encode(self, p: int) -> bytes:
        if self.held_version is None:
            return b""
        version = int(self.held_version[p])
        return codec.encode_version(None if version < 0 else version)

    def received(self) -> Requests:
        return self

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> Requests:
        if self.held_version is None:
            if any(blobs):
                raise ValueError("a sketch request has an empty body")
            return Requests(len(blobs))
        versions = [codec.decode_version(b) for b in blobs]
        return Requests(len(blobs), torch.tensor([-1 if v is None else v for v in versions], dtype=torch.long))


@dataclass(frozen=True)
class Blobs:
    """Opaque bytes, one string per message: the keys, encrypted shares, masked vectors and ciphertexts of secure
    aggregation and homomorphic encryption (`fedge.secure`), whose layout only their protocol reads. The same bytes
    cross both transports, so the ledger counts exactly their lengths."""

    blobs: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.blobs)

    def sizes(self) -> torch.Tensor:
        return torch.tensor([len(b) for b in self.blobs], dtype=torch.int64)

    def encode(self, p: int) -> bytes:
        return self.blobs[p]

    def received(self) -> Blobs:
        return self

    def decode(self, blobs: Sequence[bytes], known: KnownMasks | None = None) -> Blobs:
        return Blobs(tuple(bytes(b) for b in blobs))


__all__ = ["Blobs", "Body", "KnownMasks", "Models", "Requests"]
