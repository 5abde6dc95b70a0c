"""Pairwise similarity of device vectors on the overlap of their masks, as whole-tensor operations.

For devices i, j with updates u_i, u_j (already multiplied by their masks) and masks m_i, m_j, the overlap cosine is

    cos_ij = <m_ij ∘ u_i, m_ij ∘ u_j> / (‖m_ij ∘ u_i‖ ‖m_ij ∘ u_j‖),  m_ij = m_i ∘ m_j.

Because u_i = u_i ∘ m_i, the numerator is the plain dot product u_i·u_j and ‖m_ij ∘ u_i‖² = (u_i²)·m_j, so the whole
N×N matrix is three matrix products: no N² loop, no per-pair mask materialisation.
"""

from __future__ import annotations

import torch


def overlap_cosine(updates: torch.Tensor, masks: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """[N, N] cosine similarity on mask overlaps. `updates` [N, d] must already be zero where masked out.

    With `masks` None every coordinate is shared and this is the ordinary cosine matrix. A pair with an empty
    overlap, or a zero vector on it, gets similarity 0.
    """
    dots = updates @ updates.T
    if masks is None:
        sq = (updates * updates).sum(dim=1)
        norms = torch.sqrt(sq[:, None] * sq[None, :])
    else:
        m = masks.to(updates.dtype)
        sq_on_other = (updates * updates) @ m.T  # [i, j] = ‖u_i ∘ m_j‖²
        norms = torch.sqrt(sq_on_other * sq_on_other.T)
    return torch.where(norms > eps, dots / norms.clamp_min(eps), torch.zeros_like(dots))


def cosine_to(query: torch.Tensor, others: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of each row of `query` [Q, d] to each row of `others` [M, d] → [Q, M]."""
    q = query / query.norm(dim=1, keepdim=True).clamp_min(eps)
    o = others / others.norm(dim=1, keepdim=True).clamp_min(eps)
    return q @ o.T


def squared_distances(x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """[N, N] squared Euclidean distance ‖m_ij ∘ (x_i − x_j)‖², with x already zero where masked out."""
    if masks is None:
        sq = (x * x).sum(dim=1)
        return (sq[:, None] + sq[None, :] - 2 * (x @ x.T)).clamp_min(0)
    m = masks.to(x.dtype)
    sq_on_other = (x * x) @ m.T
    return (sq_on_other + sq_on_other.T - 2 * (x @ x.T)).clamp_min(0)


def pair_cosine(updates: torch.Tensor, masks: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
                eps: float = 1e-12) -> torch.Tensor:
    """Overlap cosine for the listed pairs only ([P] result), for when N² is too many (thousands of devices)."""
    ui, uj = updates[rows], updates[cols]
    dots = (ui * uj).sum(dim=1)
    if masks is None:
        sq_i, sq_j = (ui * ui).sum(dim=1), (uj * uj).sum(dim=1)
    else:
        mi, mj = masks[rows].to(updates.dtype), masks[cols].to(updates.dtype)
        sq_i, sq_j = (ui * ui * mj).sum(dim=1), (uj * uj * mi).sum(dim=1)
    norms = torch.sqrt(sq_i * sq_j)
    return torch.where(norms > eps, dots / norms.clamp_min(eps), torch.zeros_like(dots))


def pair_squared_distance(x: torch.Tensor, masks: torch.Tensor | None, rows: torch.Tensor,
                          cols: torch.Tensor) -> torch.Tensor:
    """‖m_ij ∘ (x_i − x_j)‖² for the listed pairs ([P] result)."""
    diff = x[rows] - x[cols]
    if masks is not None:
        diff = diff * (masks[rows] & masks[cols]).to(x.dtype)
    return (diff * diff).sum(dim=1)
