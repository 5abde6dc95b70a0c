"""Payload codec: what actually crosses the wire, and its exact size.

A message is a 15-byte frame followed by a body. The frame (little endian) names the message kind (u8), the sender
(role u8, index u32), the receiver (role u8, index u32) and the round (u32): a receiver needs nothing else to know
what it got. Bodies:

* a model vector x̃ ∘ m (length d) in the smallest of four layouts:
  - dense  : header + d values (only when every coordinate is kept, or when `sparse` is off)
  - bitmap : header + ceil(d / 8) mask bytes + nnz values
  - index  : header + nnz indices (uint16 when d <= 65536, else uint32) + nnz values
  - cached : header + nnz values, when the receiver already holds the sender's current mask (it received it in an
             earlier payload and the mask has not changed since): the mask is not sent again
  Model header (10 bytes): layout (u8), value dtype (u8: 0 = fp32, 1 = fp16), d (u32), nnz (u32).
* a model request ("send me your model"): the version of the sender's mask the requester holds (i32, -1 = none),
  so that the sender may leave the mask out;
* an empty body (a probe request: "send me your similarity sketch");
* an id list (a request for the rows of these items): a count (u32), then the ids (uint16 when every id of the
  catalogue fits, else uint32).

Byte counts reported by fedge are lengths of encoded messages; `encoded_size(s)` and `framed` compute the same numbers
without encoding and are tested to agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

HEADER = struct.Struct("<BBII")
FRAME = struct.Struct("<BBIBII")  # kind, sender role, sender index, receiver role, receiver index, round
VERSION = struct.Struct("<i")  # body of a model request: the mask version held, -1 = none
COUNT = struct.Struct("<I")  # leading count of an id list
DENSE, BITMAP, INDEX, CACHED = 0, 1, 2, 3
_DTYPES = {"fp32": (0, np.float32, 4), "fp16": (1, np.float16, 2)}
_DTYPE_BY_CODE = {code: (name, np_dtype, size) for name, (code, np_dtype, size) in _DTYPES.items()}
ValueDtype = Literal["fp32", "fp16"]


def _index_width(d: int) -> int:
    return 2 if d <= 65536 else 4


def layout_sizes(d: int, nnz: int, value_dtype: ValueDtype = "fp32") -> dict[int, int]:
    """Encoded size in bytes of each layout for a vector of length d with nnz kept coordinates."""
    value_size = _DTYPES[value_dtype][2]
    return {
        DENSE: HEADER.size + d * value_size,
        BITMAP: HEADER.size + (d + 7) // 8 + nnz * value_size,
        INDEX: HEADER.size + nnz * (_index_width(d) + value_size),
    }


def _sparse_choices(d: int, nnz: int, value_dtype: ValueDtype, mask_known: bool) -> dict[int, int]:
    """The layouts a sparse encoding may pick: dense only when nothing is pruned (a dense body cannot say which of
    its zeros are pruned), cached only when the receiver holds the mask."""
    sizes = layout_sizes(d, nnz, value_dtype)
    if nnz != d:
        del sizes[DENSE]
    if mask_known:
        sizes[CACHED] = HEADER.size + nnz * _DTYPES[value_dtype][2]
    return sizes


def encoded_size(d: int, nnz: int, value_dtype: ValueDtype = "fp32", sparse: bool = True,
                 mask_known: bool = False) -> int:
    """Size of `encode` for this shape: the smallest layout (dense only when `sparse` is False)."""
    if not sparse:
        return layout_sizes(d, nnz, value_dtype)[DENSE]
    return min(_sparse_choices(d, nnz, value_dtype, mask_known).values())


def encoded_sizes(nnz: torch.Tensor, d: int, value_dtype: ValueDtype = "fp32", sparse: bool = True,
                  mask_known: torch.Tensor | None = None) -> torch.Tensor:
    """Vectorised `encoded_size` over a tensor of nnz counts (int64 result); `mask_known` is broadcastable bool."""
    value_size = _DTYPES[value_dtype][2]
    dense = torch.full_like(nnz, HEADER.size + d * value_size)
    if not sparse:
        return dense
    bitmap = HEADER.size + (d + 7) // 8 + nnz * value_size
    index = HEADER.size + nnz * (_index_width(d) + value_size)
    best = torch.minimum(bitmap, index)
    best = torch.where(nnz == d, torch.minimum(dense, best), best)
    if mask_known is not None:
        cached = HEADER.size + nnz * value_size
        best = torch.where(mask_known, torch.minimum(best, cached), best)
    return best


def encode(values: torch.Tensor, mask: torch.Tensor | None = None, value_dtype: ValueDtype = "fp32",
           sparse: bool = True, mask_known: bool = False) -> bytes:
    """Encode the coordinates of `values` kept by `mask` (all of them when mask is None) into bytes.

    `mask_known`: the receiver already holds this exact mask, so the cached layout (values only) may be used.
    """
    code, np_dtype, _ = _DTYPES[value_dtype]
    flat = values.detach().reshape(-1).to("cpu", torch.float32).numpy()
    d = flat.shape[0]
    if mask is None or not sparse:
        keep = np.ones(d, dtype=bool) if mask is None else mask.detach().reshape(-1).cpu().numpy().astype(bool)
        dense = np.where(keep, flat, 0).astype(np_dtype)
        return HEADER.pack(DENSE, code, d, int(keep.sum())) + dense.tobytes()
    keep = mask.detach().reshape(-1).cpu().numpy().astype(bool)
    nnz = int(keep.sum())
    sizes = _sparse_choices(d, nnz, value_dtype, mask_known)
    layout = min(sizes, key=lambda k: (sizes[k], k))
    kept = flat[keep].astype(np_dtype)
    if layout == CACHED:
        return HEADER.pack(CACHED, code, d, nnz) + kept.tobytes()
    if layout == DENSE:
        return HEADER.pack(DENSE, code, d, nnz) + np.where(keep, flat, 0).astype(np_dtype).tobytes()
    if layout == BITMAP:
        return HEADER.pack(BITMAP, code, d, nnz) + np.packbits(keep, bitorder="little").tobytes() + kept.tobytes()
    index_dtype = np.uint16 if _index_width(d) == 2 else np.uint32
    idx = np.flatnonzero(keep).astype(index_dtype)
    return HEADER.pack(INDEX, code, d, nnz) + idx.tobytes() + kept.tobytes()


def layout_of(payload: bytes) -> int:
    """The layout code of an encoded model body (DENSE, BITMAP, INDEX or CACHED)."""
    if len(payload) < HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    return payload[0]


@dataclass(frozen=True)
class Decoded:
    """A decoded payload: dense values (zeros where not kept) and the kept-coordinate mask."""

    values: torch.Tensor
    mask: torch.Tensor


def decode(payload: bytes, known_mask: torch.Tensor | None = None) -> Decoded:
    """Inverse of `encode`; a cached-layout payload needs the sender's mask the receiver holds (`known_mask`).

    Raises ValueError on a truncated or malformed payload.
    """
    if len(payload) < HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    layout, code, d, nnz = HEADER.unpack_from(payload)
    if code not in _DTYPE_BY_CODE or layout not in (DENSE, BITMAP, INDEX, CACHED):
        raise ValueError("payload header names an unknown layout or dtype")
    _, np_dtype, value_size = _DTYPE_BY_CODE[code]
    body = memoryview(payload)[HEADER.size:]
    if layout == CACHED:
        if known_mask is None or known_mask.numel() != d or int(known_mask.sum()) != nnz:
            raise ValueError("a cached-mask payload needs the sender's mask that the receiver holds")
        if len(body) != nnz * value_size:
            raise ValueError(f"payload body is {len(body)} bytes, header implies {nnz * value_size}")
        keep_t = known_mask.reshape(-1).to(torch.bool)
        dense_t = torch.zeros(d)
        dense_t[keep_t] = torch.from_numpy(np.frombuffer(body, dtype=np_dtype).astype(np.float32))
        return Decoded(dense_t, keep_t.clone())
    expected = layout_sizes(d, nnz, _DTYPE_BY_CODE[code][0])[layout] - HEADER.size
    if len(body) != expected:
        raise ValueError(f"payload body is {len(body)} bytes, header implies {expected}")
    if layout == DENSE:
        dense = np.frombuffer(body, dtype=np_dtype).astype(np.float32)
        values = torch.from_numpy(dense.copy())
        # A sparse encoding is dense only when nothing is pruned; a dense encoding of a masked vector (`sparse` off)
        # carries the mask only implicitly, as its zeros.
        return Decoded(values, torch.ones(d, dtype=torch.bool) if nnz == d else values != 0)
    if layout == BITMAP:
        nbytes = (d + 7) // 8
        keep = np.unpackbits(np.frombuffer(body[:nbytes], dtype=np.uint8), count=d, bitorder="little").astype(bool)
        kept = np.frombuffer(body[nbytes:], dtype=np_dtype).astype(np.float32)
    else:
        width = _index_width(d)
        idx = np.frombuffer(body[: nnz * width], dtype=np.uint16 if width == 2 else np.uint32).astype(np.int64)
        kept = np.frombuffer(body[nnz * width:], dtype=np_dtype).astype(np.float32)
        keep = np.zeros(d, dtype=bool)
        keep[idx] = True
    dense = np.zeros(d, dtype=np.float32)
    dense[keep] = kept
    return Decoded(torch.from_numpy(dense), torch.from_numpy(keep))


def encode_version(held_version: int | None) -> bytes:
    """Body of a model request: the version of the sender's mask the requester holds (None: none)."""
    return VERSION.pack(-1 if held_version is None else held_version)


def decode_version(body: bytes | memoryview) -> int | None:
    if len(body) != VERSION.size:
        raise ValueError(f"a model request body is {VERSION.size} bytes, got {len(body)}")
    (version,) = VERSION.unpack(body)
    return None if version < 0 else version


@dataclass(frozen=True)
class Frame:
    """The frame of one message: what it is, who sent it to whom, in which round."""

    kind: int
    sender_role: int
    sender: int
    receiver_role: int
    receiver: int
    round: int


def frame(header: Frame, body: bytes) -> bytes:
    """One message on the wire: the frame, then the body."""
    return FRAME.pack(header.kind, header.sender_role, header.sender, header.receiver_role, header.receiver,
                      header.round) + body


def unframe(message: bytes) -> tuple[Frame, bytes]:
    """Split a message into its frame and its body; ValueError when it is shorter than a frame."""
    if len(message) < FRAME.size:
        raise ValueError(f"message of {len(message)} bytes is shorter than its frame")
    return Frame(*FRAME.unpack_from(message)), message[FRAME.size:]


def framed(body_sizes: torch.Tensor | int) -> torch.Tensor | int:
    """Length on the wire of messages with these body lengths."""
    return body_sizes + FRAME.size


def _id_dtype(catalogue: int) -> type[np.unsignedinteger]:
    return np.uint16 if catalogue <= 65536 else np.uint32


def id_list_sizes(counts: torch.Tensor, catalogue: int) -> torch.Tensor:
    """Encoded lengths of id lists with these many ids each, for ids below `catalogue`."""
    return COUNT.size + counts.to(torch.int64) * np.dtype(_id_dtype(catalogue)).itemsize


def encode_id_list(ids: torch.Tensor, catalogue: int) -> bytes:
    """An id list body: the count, then the ids (each below `catalogue`)."""
    values = ids.detach().cpu().numpy().astype(_id_dtype(catalogue))
    return COUNT.pack(len(values)) + values.tobytes()


def decode_id_list(body: bytes | memoryview, catalogue: int) -> torch.Tensor:
    """Inverse of `encode_id_list`; ValueError on a truncated body or an id outside the catalogue."""
    if len(body) < COUNT.size:
        raise ValueError(f"an id list of {len(body)} bytes is shorter than its count")
    (count,) = COUNT.unpack_from(body)
    dtype = _id_dtype(catalogue)
    if len(body) != COUNT.size + count * np.dtype(dtype).itemsize:
        raise ValueError(f"an id list of {len(body)} bytes does not hold {count} ids")
    ids = torch.from_numpy(np.frombuffer(body, dtype=dtype, offset=COUNT.size).astype(np.int64))
    if count and int(ids.max()) >= catalogue:
        raise ValueError("an id list names an id outside the catalogue")
    return ids
