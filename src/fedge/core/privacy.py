"""Differential-privacy primitives on stacked tensors: per-row clipping and the Gaussian mechanism.

* DP-SGD (Abadi et al., CCS 2016): clip each sample's gradient to L2 norm C, sum, add N(0, σ²C²) per coordinate,
  divide by the expected batch size.
* DP-FedAvg (McMahan et al., ICLR 2018): clip each device's model update to norm C, sum, add N(0, σ²C²).
* Adaptive clipping (Andrew et al., NeurIPS 2021): move C geometrically towards the target quantile of the update
  norms, from a noisy count of the updates that were not clipped.

Clipping scales a row by min(1, C / (‖row‖ + 1e-6)), the factor Opacus uses, so results match it to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def clip_rows(x: torch.Tensor, max_norm: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(each row of x [B, d] scaled to L2 norm at most `max_norm`, the rows' norms before clipping).
    `max_norm` None: no clipping (C = ∞)."""
    norms = torch.linalg.vector_norm(x, dim=1)
    if max_norm is None:
        return x, norms
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return x * factor[:, None].to(x.dtype), norms


def clip_factors(norms: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """The factors min(1, C / (‖g‖ + 1e-6)) that clip vectors of L2 norms `norms` to `max_norm` (Opacus's); ones
    for `max_norm` None (C = ∞)."""
    if max_norm is None:
        return torch.ones_like(norms)
    return (max_norm / (norms + 1e-6)).clamp(max=1.0)


def outer_sq_norms(left: torch.Tensor, right: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Frobenius norms [..., B] of the per-sample outer products left_b right_bᵀ (left [..., B, p], right
    [..., B, q]), counting only the entries where `keep` [..., p, q] is set, without forming the outer products:
    ‖l rᵀ‖² = ‖l‖²‖r‖², and with a mask Σ_jk keep_jk l_j² r_k² = ((l²) keep) · r². A linear layer's per-sample weight
    gradient is such a product (the output gradient times the input), which is what makes clipping it cheap
    (Goodfellow 2015, "Efficient per-example gradient computations")."""
    left2, right2 = left.square(), right.square()
    if keep is None:
        return left2.sum(-1) * right2.sum(-1)
    return (torch.matmul(left2, keep.to(left2.dtype)) * right2).sum(-1)


def outer_weighted_sum(left: torch.Tensor, right: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_b weights_b · left_b right_bᵀ [..., p, q] (left [..., B, p], right [..., B, q], weights [..., B]): the sum
    of clipped per-sample outer products, as one matrix product."""
    return torch.matmul((left * weights.unsqueeze(-1)).transpose(-1, -2), right)


@dataclass
class PerSample:
    """Per-sample gradients of M devices × B samples over a flat layout of `dim` coordinates, per parameter tensor:
    `full` parts hold them as [M, B, n] for coordinates `coords`; `outer` parts as the factors (left [M, B, p], right
    [M, B, q]) of the gradients left_b right_bᵀ of a [p, q] weight stored row-major at `coords`. A linear layer's
    per-sample weight gradients are such outer products (output gradient × input); kept factored, DP-SGD clips and
    sums them without ever forming the [M, B, p, q] tensor (Goodfellow 2015; `outer_sq_norms`)."""

    dim: int
    full: list[tuple[slice, torch.Tensor]] = field(default_factory=list)
    outer: list[tuple[slice, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def sq_norms(self, keep: torch.Tensor | None) -> torch.Tensor:
        """Squared L2 norms [M, B] of the gradients restricted to the coordinates `keep` [M, d] (None: all)."""
        total = 0
        for coords, g in self.full:
            total = total + (g.square() if keep is None else g.square() * keep[:, None, coords]).sum(-1)
        for coords, left, right in self.outer:
            mask = None if keep is None else keep[:, coords].view(len(left), left.shape[-1], right.shape[-1])
            total = total + outer_sq_norms(left, right, mask)
        return torch.as_tensor(total)

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ_b weights[m, b] · g_mb [M, d]."""
        if len(self.full) == 1 and not self.outer and self.full[0][1].shape[-1] == self.dim:
            return torch.bmm(weights.unsqueeze(1), self.full[0][1]).squeeze(1)  # one part holds every coordinate
        out = weights.new_zeros(len(weights), self.dim)
        for coords, g in self.full:
            out[:, coords] = torch.bmm(weights.unsqueeze(1), g).squeeze(1)
        for coords, left, right in self.outer:
            out[:, coords] = outer_weighted_sum(left, right, weights).flatten(1)
        return out

    def dense(self) -> torch.Tensor:
        """The gradients as one [M, B, d] tensor (for tests; needs at least one part)."""
        parts = [(coords, g) for coords, g in self.full]
        parts += [(coords, (left.unsqueeze(-1) * right.unsqueeze(-2)).flatten(2)) for coords, left, right in self.outer]
        m, b = parts[0][1].shape[:2]
        out = torch.zeros(m, b, self.dim)
        for coords, g in parts:
            out[:, :, coords] = g
        return out

    def clipped_sum(self, max_norm: float | None, valid: torch.Tensor,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_b valid_mb · clip(g_mb ∘ keep_m) [M, d]: each sample's gradient restricted to the coordinates `keep`
        [M, d] (None: all), clipped to L2 norm `max_norm` (`clip_factors`), summed over the samples `valid` [M, B]
        marks (0 for padding). Without parts (an empty batch): zeros. Coordinates outside `keep` are not zeroed in
        the sum: the caller masks the noisy sum (`gaussian_mechanism`)."""
        if not self.full and not self.outer:
            return torch.zeros(len(valid), self.dim)
        return self.weighted_sum(clip_factors(self.sq_norms(keep).sqrt(), max_norm) * valid)


class Noise:
    """Rows of Gaussian noise in a flat layout of parameter tensors (`layout`: objects with `start`, `stop`, `shape`,
    such as `FlatModel.slices`), each row drawn with one `normal_` per tensor in layout order: the draws of Opacus's
    `DPOptimizer.add_noise` (`torch.normal(0, σC, size=p.shape, generator=g)` per parameter), so the same generator
    state gives the same noise. The views are made once, not per step."""

    def __init__(self, layout: Sequence[Any], rows: int) -> None:
        dim = max((s.stop for s in layout), default=0)
        self.values = torch.empty(rows, dim)
        self.views = [[self.values[k, s.start:s.stop].view(s.shape) for s in layout] for k in range(rows)]

    def draw(self, row: int, std: float, generator: torch.Generator) -> None:
        """Fill row `row` with N(0, std²) from `generator`."""
        for view in self.views[row]:
            view.normal_(0.0, std, generator=generator)


def gaussian_mechanism(total: torch.Tensor, std: float, noise: torch.Tensor | None,
                       keep: torch.Tensor | None = None) -> torch.Tensor:
    """total + std · noise (`noise` standard normal, same shape), zero where `keep` is False (pruned coordinates get
    no noise and stay zero). std = σ·C; std 0 or `noise` None returns `total` unchanged (bit for bit)."""
    if std > 0 and noise is not None:
        total = total + std * noise
    if keep is not None:
        total = torch.where(keep, total, torch.zeros((), dtype=total.dtype))
    return total


def adaptive_clip(max_norm: float, unclipped_fraction: float, target_quantile: float, learning_rate: float) -> float:
    """Andrew et al. (2021), geometric update: C ← C · exp(−η (b̄ − γ)), b̄ the (noisy) fraction of updates whose
    norm was at most C, γ the target quantile."""
    return max_norm * math.exp(-learning_rate * (unclipped_fraction - target_quantile))


def adaptive_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """The update noise multiplier σ_Δ that keeps the overall guarantee of noise multiplier σ when the count of
    unclipped updates is released too, with Gaussian noise of standard deviation σ_b = `count_stddev` added to the
    sum of the bits (sensitivity ½ once centred): σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2) (Andrew et al. 2021, section 3)."""
    if noise_multiplier == 0:
        return 0.0
    inner = noise_multiplier ** -2 - (2 * count_stddev) ** -2
    if inner <= 0:
        raise ValueError(f"the clipped-count noise ({count_stddev}) is too small for noise multiplier "
                         f"{noise_multiplier}: need count noise > σ/2")
    return inner ** -0.5


__all__ = ["Noise", "PerSample", "adaptive_clip", "adaptive_noise_multiplier", "clip_factors", "clip_rows",
           "gaussian_mechanism", "outer_sq_norms", "outer_weighted_sum"]
