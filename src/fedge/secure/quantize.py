"""Fixed-point encoding of updates for secure aggregation: clip each coordinate to [−c, c], map it to an integer in
[0, 2^value_bits − 1] (round to nearest), and sum in Z_{2^bits}.

The sum of m such integers is below m·(2^value_bits − 1); it is exact in Z_{2^bits} when that is below 2^bits,
which `check_headroom` verifies for the largest number of summands a run can have (Bonawitz et al., CCS 2017,
section 3: inputs in Z_R with R large enough for the sum). Rounding to nearest moves a coordinate by at most half a
step (c / (2^value_bits − 1)), so the dequantized mean of unclipped values is within that of the float mean.
"""

from __future__ import annotations

import numpy as np
import torch

from fedge.config import ConfigError


def levels(value_bits: int) -> int:
    """The largest quantized value, 2^value_bits − 1."""
    return (1 << value_bits) - 1


def step(clip: float, value_bits: int) -> float:
    """The quantization step 2c / (2^value_bits − 1)."""
    return 2.0 * clip / levels(value_bits)


def bits_needed(summands: int, value_bits: int) -> int:
    """The fewest modulus bits that hold the sum of `summands` values of `value_bits` bits."""
    return (summands * levels(value_bits)).bit_length()


def check_headroom(summands: int, value_bits: int, bits: int, setting: str = "secure.bits") -> None:
    """One-line ConfigError when Z_{2^bits} cannot hold the sum of `summands` quantized values."""
    if bits_needed(summands, value_bits) > bits:
        raise ConfigError(f"{setting}: 2^{bits} cannot hold the sum of {summands} values of {value_bits} bits "
                          f"(need {setting} >= {bits_needed(summands, value_bits)}, or fewer secure.value_bits)")


def quantize(values: torch.Tensor, clip: float, value_bits: int) -> np.ndarray:
    """[..., d] float -> uint64 integers in [0, 2^value_bits − 1]: clip to [−c, c], then round (x + c) / step."""
    clipped = values.detach().to(torch.float64).clamp(-clip, clip)
    scaled = torch.round((clipped + clip) / step(clip, value_bits))
    return scaled.clamp(0, levels(value_bits)).to(torch.int64).numpy().astype(np.uint64)


def dequantize_sum(total: np.ndarray, summands: int, clip: float, value_bits: int) -> torch.Tensor:
    """[d] float64: the sum of the `summands` clipped values whose quantized sum is `total` (exact integers),
    Σ q·step − m·c."""
    as_float = torch.from_numpy(total.astype(np.float64))
    return as_float * step(clip, value_bits) - summands * clip


__all__ = ["bits_needed", "check_headroom", "dequantize_sum", "levels", "quantize", "step"]
