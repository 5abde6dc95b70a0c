"""Binary pruning masks (paper section III.B): x̃_i = x_i ∘ m_i.

Magnitude pruning is per layer: every prunable tensor keeps exactly round(ρ · n_layer) of its largest-magnitude
coordinates, so no layer is wiped out by a global threshold and the density of each layer is exact. Coordinates
outside every group (biases) are always kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kept_count(size: int, density: float) -> int:
    """Number of coordinates a layer of `size` keeps at `density` (at least one)."""
    return max(1, min(size, int(round(density * size))))


def keep_largest(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Boolean [N, L]: per row i, the `keep[i]` largest entries of `values` (ties: lower index first).

    The same choice as a stable descending sort, but found with `kthvalue` (linear-time selection) once per distinct
    keep count — a handful per round: bandwidth classes × schedule steps — instead of sorting every row; rows whose
    cut-off value is tied are finished exactly with a cumulative count. 1 ≤ keep[i] ≤ L.
    """
    n, size = values.shape
    chosen = torch.zeros(n, size, dtype=torch.bool, device=values.device)
    for count in torch.unique(keep).tolist():
        rows = torch.nonzero(keep == count).flatten()
        block = values[rows]
        cutoff = torch.kthvalue(block, size - count + 1, dim=1, keepdim=True).values
        kept = block >= cutoff
        # rows with more entries equal to the cut-off than room for them
        tied = torch.nonzero(kept.view(torch.uint8).sum(dim=1, dtype=torch.int32) > count).flatten()
        if len(tied):
            sub, cut = block[tied], cutoff[tied]
            above = sub > cut
            at_cutoff = (sub == cut) & (torch.cumsum(sub == cut, dim=1) <= count - above.sum(dim=1, keepdim=True))
            kept[tied] = above | at_cutoff
        chosen[rows] = kept
    return chosen


def magnitude_mask(x: torch.Tensor, groups: list[tuple[int, int]], density: torch.Tensor,
                   current: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [N, d] mask keeping the largest |x| per layer group at each device's `density` [N].

    With `current` given, only currently kept coordinates compete (pruned ones stay pruned): pruning only removes.
    Ties are broken by coordinate index (as a stable sort would), so the result is deterministic.
    """
    n, d = x.shape
    mask = torch.ones(n, d, dtype=torch.bool, device=x.device)
    magnitude = x.abs()
    if current is not None:
        magnitude = torch.where(current, magnitude, torch.full_like(magnitude, -1.0))
    for start, stop in groups:
        size = stop - start
        keep = torch.tensor([kept_count(size, float(r)) for r in density], device=x.device, dtype=torch.int64)
        mask[:, start:stop] = keep_largest(magnitude[:, start:stop], keep)
    return mask


def regrow(mask: torch.Tensor, groups: list[tuple[int, int]], density: torch.Tensor,
           noise: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    """Grow each device's mask back up to `density` per layer by re-enabling pruned coordinates chosen at random.

    `noise(rows, start, stop)` gives [len(rows), stop - start] uniforms for the listed rows (each device's own
    stream, so a device's choice does not depend on the others); among a row's pruned coordinates those with the
    largest noise are re-enabled (ties: lower coordinate). Regrown coordinates start at value zero (they were zero
    while pruned), as in RigL-style regrowth; a device whose density already meets the target is unchanged.
    """
    grown = mask.clone()
    for start, stop in groups:
        size = stop - start
        block = grown[:, start:stop]
        target = torch.tensor([kept_count(size, float(r)) for r in density], device=mask.device)
        missing = (target - block.view(torch.uint8).sum(dim=1, dtype=torch.int32)).clamp_min(0)
        rows = torch.nonzero(missing > 0).flatten()  # only rows below their target draw and sort
        if len(rows) == 0:
            continue
        sub = block[rows]
        scores = noise(rows, start, stop).to(mask.device).masked_fill(sub, -1.0)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        ranks = torch.arange(size, device=mask.device).expand(len(rows), size)
        add = torch.zeros_like(sub)
        add.scatter_(1, order, ranks < missing[rows, None])
        grown[rows, start:stop] = sub | add
    return grown


def density(mask: torch.Tensor, prunable: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of kept coordinates per device [N] (over prunable coordinates when `prunable` [d] is given)."""
    if prunable is None:
        return mask.float().mean(dim=1)
    return mask[:, prunable].float().mean(dim=1)


def scheduled_density(target: torch.Tensor, progress: torch.Tensor, ramp_rounds: int) -> torch.Tensor:
    """Density after `progress` pruning steps: 1 − (1 − ρ)·min(1, progress / ramp_rounds), per device.

    Density falls linearly from 1 to the target ρ over `ramp_rounds` steps rather than in one cut (adaptive pruning,
    paper section III.C); `progress` is per device because a device may pause or back off.
    """
    if ramp_rounds <= 0:
        return target.clone()
    fraction = (progress.to(target.dtype) / ramp_rounds).clamp(0.0, 1.0)
    return 1.0 - (1.0 - target) * fraction
