"""Named random streams: every random draw of every engine is a pure function of (seed, purpose, device, round).

Why: a result must not depend on the order in which devices are stored, iterated or spread over processes. A single
generator consumed device after device ties each device's draws to its position in that sequence; here each device
has its own stream per purpose and round, so a device draws the same numbers whether it is stored in row 0 or row
17, trained first or last, in this process or another.

Two kinds of stream, both derived from a 64-bit key hashed from the seed, the purpose's name and the key parts:

* `generator(seed, purpose, *parts)` — a `torch.Generator` for sequential draws (a device's minibatch shuffles of
  one round, a model's initialisation, a data partition);
* `uniform(seed, purpose, round, devices, counters)` — counter-based uniforms in [0, 1), computed in bulk: entry
  (r, c) is a hash of (key of devices[r], counters[c]) (SplitMix64's finaliser, Steele et al., OOPSLA 2014). For
  vectorised draws over many devices at once (which candidates to probe, who fails this round) without a Python
  loop, and without any state to checkpoint.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK63 = (1 << 63) - 1


def stream_key(seed: int, purpose: str, *parts: int) -> int:
    """The 64-bit key of one stream: BLAKE2b of the seed, the purpose's name and the integer key parts."""
    packed = struct.pack(f"<q{len(parts)}q", seed, *parts) + purpose.encode()
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")


def generator(seed: int, purpose: str, *parts: int) -> torch.Generator:
    """A fresh `torch.Generator` for (seed, purpose, *parts), e.g. `generator(seed, "train", device, round)`."""
    return torch.Generator().manual_seed(stream_key(seed, purpose, *parts) & _MASK63)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, purpose: str, round_number: int, devices: torch.Tensor,
            counters: torch.Tensor | int) -> torch.Tensor:
    """[len(devices), C] float32 uniforms in [0, 1): entry (r, c) belongs to device `devices[r]` alone.

    `counters` is a [C] tensor of draw numbers (or an int C for draws 0..C-1); draw c of device i in a round is the
    same number whatever else is drawn, so callers may key draws by another device's id (a pair's noise) or by an
    attempt number. float32 gets 24 random bits, so values are exact multiples of 2⁻²⁴ and never 1.
    """
    base = np.uint64(stream_key(seed, purpose, round_number))
    ids = devices.detach().cpu().numpy().astype(np.uint64)
    count = torch.arange(counters) if isinstance(counters, int) else counters
    ctr = count.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        device_keys = _mix(base + (ids + np.uint64(1)) * _GOLDEN)
        bits = _mix(device_keys[:, None] ^ _mix((ctr[None, :] + np.uint64(1)) * _GOLDEN))
    values = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return torch.from_numpy(values)


class Streams:
    """The streams of one run: `generator` and `uniform` with the run's seed bound."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generator(self, purpose: str, *parts: int) -> torch.Generator:
        return generator(self.seed, purpose, *parts)

    def uniform(self, purpose: str, round_number: int, devices: torch.Tensor,
                counters: torch.Tensor | int) -> torch.Tensor:
        return uniform(self.seed, purpose, round_number, devices, counters)

    def device_generators(self, purpose: str, devices: torch.Tensor, round_number: int) -> list[torch.Generator]:
        """One generator per device id in `devices`, for this round."""
        return [generator(self.seed, purpose, int(d), round_number) for d in devices.tolist()]


__all__ = ["Streams", "generator", "stream_key", "uniform"]
