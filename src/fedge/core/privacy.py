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
    left2, right2 = left * left, right * right
    if keep is None:
        return left2.sum(-1) * right2.sum(-1)
    return (torch.matmul(left2, keep.to(left2.dtype)) * right2).sum(-1)


def outer_weighted_sum(left: torch.Tensor, right: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_b weights_b · left_b right_bᵀ [..., p, q] (left [..., B, p], right [..., B, q], weights [..., B]): the sum
    of clipped per-sample outer products, as one matrix product."""
    scaled = (left * weights.unsqueeze(-1)).transpose(-1, -2)
    return torch.bmm(scaled, right) if left.dim() == 3 else torch.matmul(scaled, right)


@dataclass
class PerSample:
    """Per-sample gradients of M devices × B samples over a flat layout of `dim` coordinates, per parameter tensor:
    `full` parts hold them as [M, B, n] for coordinates `coords`; `outer` parts as the factors (left [M, B, p], right
    [M, B, q]) of the gradients left_b right_bᵀ of a [p, q] weight stored row-major at `weight`, with the gradients of
    the layer's bias at `bias` (None: no bias), which are `left` itself. A linear layer's per-sample weight gradients
    are such outer products (output gradient × input) and its bias gradients the output gradients; kept factored,
    DP-SGD clips and sums them without ever forming the [M, B, p, q] tensor (Goodfellow 2015; `outer_sq_norms`)."""

    dim: int
    full: list[tuple[slice, torch.Tensor]] = field(default_factory=list)
    outer: list[tuple[slice, slice | None, torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def sq_norms(self, keep: torch.Tensor | None, right_sq: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
        """Squared L2 norms [M, B] of the gradients restricted to the coordinates `keep` [M, d] (None: all). Summed
        as the parts come: `full` parts, the biases of `outer` parts, then their weights (‖l‖²‖r‖², sharing ‖l‖²
        with the bias): the order of sums of fedge before biases were folded, so results stay bit for bit (squares
        as x·x, which is what `square()` computes, in fewer kernels). `right_sq[k]`, if given and not None, is
        outer part k's ‖r_b‖² [M, B] computed beforehand (the batched trainer gathers the inputs' once per chunk)."""
        parts: list[torch.Tensor] = []
        for coords, g in self.full:
            parts.append((g * g if keep is None else g * g * keep[:, None, coords]).sum(-1))
        if keep is None:
            left_sq = [(left * left).sum(-1) for _, _, left, _ in self.outer]
            parts += [l2 for (_, bias, _, _), l2 in zip(self.outer, left_sq, strict=True) if bias is not None]
            known = list(right_sq) + [None] * (len(self.outer) - len(right_sq))
            parts += [l2 * (r2 if r2 is not None else (right * right).sum(-1))
                      for (_, _, _, right), l2, r2 in zip(self.outer, left_sq, known, strict=True)]
        else:
            parts += [(left * left * keep[:, None, bias]).sum(-1) for _, bias, left, _ in self.outer
                      if bias is not None]
            parts += [outer_sq_norms(left, right, keep[:, weight].view(len(left), left.shape[-1], right.shape[-1]))
                      for weight, _, left, right in self.outer]
        assert parts, "no per-sample gradients"
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    def clip_weights(self, max_norm: float | None, valid: torch.Tensor | None,
                     keep: torch.Tensor | None = None, right_sq: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
        """valid_mb · min(1, C / (‖g_mb ∘ keep_m‖ + 1e-6)) [M, B] (`clip_factors`; `valid` None: all samples;
        `right_sq` as in `sq_norms`)."""
        if max_norm is None:
            return valid if valid is not None else torch.ones(
                (self.full[0][1] if self.full else self.outer[0][2]).shape[:2])
        factors = torch.div(max_norm, self.sq_norms(keep, right_sq).sqrt_().add_(1e-6)).clamp_max_(1.0)
        return factors if valid is None else factors.mul_(valid)

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ_b weights[m, b] · g_mb [M, d], one batched matrix product per part. (Each product is formed on its own,
        not accumulated into a buffer: `baddbmm_` into a strided view sums in an order that depends on the padded
        batch width, so a device's result would depend on which other devices train with it.) When the parts tile
        the coordinates (every layer-hooked model, every dense stack) the pieces are concatenated in one `cat`
        instead of copied one by one into a buffer: the same numbers, fewer operations."""
        if len(self.full) == 1 and not self.outer and self.full[0][1].shape[-1] == self.dim:
            return torch.bmm(weights.unsqueeze(1), self.full[0][1]).squeeze(1)  # one part holds every coordinate
        m, row = len(weights), weights.unsqueeze(1)
        pieces = [(coords, torch.bmm(row, g).view(m, -1)) for coords, g in self.full]
        for weight, bias, left, right in self.outer:
            pieces.append((weight, outer_weighted_sum(left, right, weights).view(m, -1)))
            if bias is not None:
                pieces.append((bias, torch.bmm(row, left).view(m, -1)))
        pieces.sort(key=lambda piece: piece[0].start)
        if all(a.stop == b.start for (a, _), (b, _) in zip(pieces, pieces[1:], strict=False)) and pieces and (
                pieces[0][0].start == 0 and pieces[-1][0].stop == self.dim):
            return torch.cat([piece for _, piece in pieces], dim=1)
        out = weights.new_zeros(m, self.dim)
        for coords, piece in pieces:
            out[:, coords] = piece
        return out

    def dense(self) -> torch.Tensor:
        """The gradients as one [M, B, d] tensor (for tests; needs at least one part)."""
        parts = [(coords, g) for coords, g in self.full]
        for weight, bias, left, right in self.outer:
            parts.append((weight, (left.unsqueeze(-1) * right.unsqueeze(-2)).flatten(2)))
            if bias is not None:
                parts.append((bias, left))
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
        return self.weighted_sum(self.clip_weights(max_norm, valid, keep))


def noise_runs(layout: Sequence[Any]) -> list[slice]:
    """The coordinate runs that `Noise` fills with one `normal_` each, drawing exactly what one `normal_` per
    parameter tensor in layout order draws. PyTorch's CPU `normal_` fills a contiguous float tensor of n >= 16 with n
    uniforms and transforms them 16 at a time (Box-Muller, pairs i and i + 8 of a block), redrawing the last 16
    uniforms when 16 does not divide n; a tensor of n < 16 is drawn one double-precision normal at a time. So
    adjacent tensors of 16 or more merge while all but the last are multiples of 16 (their blocks stay aligned, and
    only the run's last tensor may have a partial block), and adjacent tensors under 16 merge while the run stays
    under 16 (tests/core/test_privacy_noise.py checks the equality against per-tensor draws)."""
    runs: list[tuple[int, int, bool]] = []  # (start, stop, drawn 16 at a time)
    for s in sorted(layout, key=lambda s: s.start):
        start, stop = int(s.start), int(s.stop)
        if stop <= start:
            continue
        blocked = stop - start >= 16
        if runs:
            first, last, run_blocked = runs[-1]
            if last == start and blocked and run_blocked and (last - first) % 16 == 0:
                runs[-1] = (first, stop, True)
                continue
            if last == start and not blocked and not run_blocked and stop - first < 16:
                runs[-1] = (first, stop, False)
                continue
        runs.append((start, stop, blocked))
    return [slice(first, last) for first, last, _ in runs]


class Noise:
    """Rows of Gaussian noise in a flat layout of parameter tensors (`layout`: objects with `start`, `stop`, `shape`,
    such as `FlatModel.slices`), each row drawn with one `normal_` per tensor in layout order: the draws of Opacus's
    `DPOptimizer.add_noise` (`torch.normal(0, σC, size=p.shape, generator=g)` per parameter), so the same generator
    state gives the same noise. Adjacent tensors whose draws do not depend on where one ends are drawn with one call
    (`noise_runs`: LeNet-5's ten tensors in six, the MLP's four in two), the same numbers. The views are made once."""

    def __init__(self, layout: Sequence[Any], rows: int) -> None:
        dim = max((s.stop for s in layout), default=0)
        self.values = torch.empty(rows, dim)
        self.runs = noise_runs(layout)
        self.views = [[self.values[k, run] for run in self.runs] for k in range(rows)]
        self.row = self.values[0] if rows else self.values  # row 0, for one device's steps

    def draw(self, row: int, std: float, generator: torch.Generator) -> None:
        """Fill row `row` with N(0, std²) from `generator`."""
        for view in self.views[row]:
            view.normal_(0.0, std, generator=generator)

    def draw_rows(self, std: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Fill rows 0 .. len(generators) - 1, row k from `generators[k]`; returns those rows."""
        assert len(generators) <= len(self.views), "more generators than noise rows"
        for row, generator in zip(self.views, generators, strict=False):
            for view in row:
                view.normal_(0.0, std, generator=generator)
        return self.values[:len(generators)]


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
           "gaussian_mechanism", "noise_runs", "outer_sq_norms", "outer_weighted_sum"]
