"""Neighbour selection from a score matrix (paper section III.C, DPMN step 3).

`threshold_select` keeps S_i = {j : s_ij ≥ δ}, best first, capped at k_max and topped up to k_min with the best
remaining candidates so that no device is isolated. Candidates are given by a boolean [N, N] matrix (physical
topology, live devices, scores known); the diagonal is never a candidate.
"""

from __future__ import annotations

import torch


def _ranked(scores: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = scores.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    allowed = candidates & ~eye
    masked = torch.where(allowed, scores, torch.full_like(scores, float("-inf")))
    # Stable ordering: descending score, ties broken by lower index, so selection is deterministic.
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    return order, torch.gather(allowed, 1, order)


def threshold_select(scores: torch.Tensor, candidates: torch.Tensor, delta: float,
                     k_min: torch.Tensor | int, k_max: torch.Tensor | int) -> torch.Tensor:
    """Boolean [N, N] neighbour matrix: row i holds S_i.

    Per row: take candidates in descending score order; keep those with score ≥ delta up to k_max (per-device
    tensor or int); if fewer than k_min pass the threshold, add the best remaining candidates up to k_min.
    """
    n = scores.shape[0]
    k_min_t = torch.as_tensor(k_min, device=scores.device).expand(n)
    k_max_t = torch.as_tensor(k_max, device=scores.device).expand(n)
    order, allowed_sorted = _ranked(scores, candidates)
    sorted_scores = torch.gather(scores, 1, order)
    # Rank among allowed candidates only.
    allowed_rank = torch.cumsum(allowed_sorted.long(), dim=1) - 1
    passes = allowed_sorted & (sorted_scores >= delta) & (allowed_rank < k_max_t[:, None])
    n_pass = passes.sum(dim=1)
    need = torch.clamp(k_min_t - n_pass, min=0)
    fill = allowed_sorted & ~passes & (allowed_rank < (n_pass + need)[:, None])
    chosen_sorted = passes | fill
    selected = torch.zeros_like(chosen_sorted)
    selected.scatter_(1, order, chosen_sorted)
    return selected


def topk_select(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Boolean [N, N]: the k highest-scoring candidates of each row (fewer if fewer exist)."""
    n = scores.shape[0]
    k_t = torch.as_tensor(k, device=scores.device).expand(n)
    order, allowed_sorted = _ranked(scores, candidates)
    allowed_rank = torch.cumsum(allowed_sorted.long(), dim=1) - 1
    chosen_sorted = allowed_sorted & (allowed_rank < k_t[:, None])
    selected = torch.zeros_like(chosen_sorted)
    selected.scatter_(1, order, chosen_sorted)
    return selected


def random_select(candidates: torch.Tensor, counts: torch.Tensor | int, generator: torch.Generator) -> torch.Tensor:
    """Boolean [N, N]: `counts[i]` candidates of row i drawn uniformly without replacement."""
    n = candidates.shape[0]
    noise = torch.rand(n, n, generator=generator, device=candidates.device)
    return topk_select(noise, candidates, counts)
