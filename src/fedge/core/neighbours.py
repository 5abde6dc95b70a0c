"""Neighbour selection from a score matrix (paper section III.C, DPMN step 3).

`threshold_select` keeps S_i = {j : s_ij ≥ δ}, best first, capped at k_max and topped up to k_min with the best
remaining candidates so that no device is isolated. Candidates are given by a boolean [N, N] matrix (physical
topology, live devices, scores known); the diagonal is never a candidate.
"""

from __future__ import annotations

import torch


def _masked(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Scores with non-candidates and the diagonal at -inf (never chosen)."""
    masked = torch.where(candidates, scores, float("-inf"))
    masked.fill_diagonal_(float("-inf"))
    return masked


def best_per_row(masked: torch.Tensor, counts: torch.Tensor,
                 top: tuple[torch.Tensor, torch.Tensor] | None = None,
                 tie_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [R, N]: per row i, the `counts[i]` finite entries of `masked` of highest value, ties to the column of
    lower `tie_rank` ([N]; None: lower index). Runtimes pass device ids, so that ties do not depend on storage.

    The same choice as a stable descending sort of every row, but with one `topk` of width max(counts) + 1 (small:
    neighbours or probes per device) instead of a full [N, N] sort — at 10,000 devices the sort took ~15 s a call on
    one core, this ~0.5 s. Rows whose cut-off value is tied with the next entry (rare with real-valued scores) are
    redone exactly. `top` reuses a `topk(masked, width)` the caller already has.
    """
    n = masked.shape[0]
    selected = torch.zeros(masked.shape, dtype=torch.bool, device=masked.device)
    if n == 0 or int(counts.max()) == 0:
        return selected
    if top is None:
        width = min(int(counts.max()) + 1, masked.shape[1])
        top = torch.topk(masked, width, dim=1, sorted=True)
    best, index = top
    width = best.shape[1]
    counts = torch.minimum(counts, torch.isfinite(best).sum(dim=1))  # no more than the row's real candidates
    cutoff = best.gather(1, (counts - 1).clamp_min(0)[:, None])
    following = best.gather(1, counts.clamp_max(width - 1)[:, None])
    tied = ((counts > 0) & (counts < width) & (following == cutoff).squeeze(1)).nonzero().flatten()
    take = torch.arange(width, device=masked.device)[None, :] < counts[:, None]
    take[tied] = False
    rows = torch.arange(n, device=masked.device)[:, None].expand(n, width)
    selected[rows[take], index[take]] = True
    for i in tied.tolist():  # exact: everything above the cut-off, then the tied entries by rank
        row, cut = masked[i], cutoff[i]
        above = row > cut
        selected[i] = above
        at_cut = torch.nonzero(row == cut).flatten()
        if tie_rank is not None:
            at_cut = at_cut[torch.argsort(tie_rank[at_cut])]
        selected[i, at_cut[: int(counts[i]) - int(above.sum())]] = True
    return selected


def threshold_select(scores: torch.Tensor, candidates: torch.Tensor, delta: float,
                     k_min: torch.Tensor | int, k_max: torch.Tensor | int,
                     tie_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [N, N] neighbour matrix: row i holds S_i.

    Per row: take candidates in descending score order (ties: lower index first); keep those with score ≥ delta up
    to k_max (per-device tensor or int); if fewer than k_min pass the threshold, add the best remaining candidates
    up to k_min. Candidates passing δ are a prefix of that order, so row i keeps its best
    max(min(#passing, k_max), k_min) candidates — counted on the row's best k_max scores alone.
    """
    n = scores.shape[0]
    k_min_t = torch.as_tensor(k_min, device=scores.device).expand(n).to(torch.int64)
    k_max_t = torch.as_tensor(k_max, device=scores.device).expand(n).to(torch.int64)
    if n == 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    masked = _masked(scores, candidates)
    width = min(int(torch.maximum(k_min_t, k_max_t).max()) + 1, n)
    top = torch.topk(masked, width, dim=1, sorted=True)
    rank = torch.arange(width, device=scores.device)[None, :]
    passing = ((top.values >= delta) & (rank < k_max_t[:, None])).sum(dim=1)
    return best_per_row(masked, torch.maximum(passing, k_min_t), top=(top.values, top.indices), tie_rank=tie_rank)


def topk_select(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor | int,
                tie_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [N, N]: the k highest-scoring candidates of each row (fewer if fewer exist; ties: lower rank)."""
    n = scores.shape[0]
    k_t = torch.as_tensor(k, device=scores.device).expand(n).to(torch.int64)
    return best_per_row(_masked(scores, candidates), k_t, tie_rank=tie_rank)


def random_select(candidates: torch.Tensor, counts: torch.Tensor | int, noise: torch.Tensor,
                  tie_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [N, N]: `counts[i]` candidates of row i drawn uniformly without replacement, given i.i.d. uniform
    `noise` [N, N] (the candidates of largest noise are taken)."""
    return topk_select(noise, candidates, counts, tie_rank=tie_rank)
