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


def paired_cosine(u_i: torch.Tensor, m_i: torch.Tensor | None, u_j: torch.Tensor, m_j: torch.Tensor | None,
                  eps: float = 1e-12) -> torch.Tensor:
    """Overlap cosine of row p of `u_i` with row p of `u_j` ([P] result), each already zero outside its mask.

    For pairs whose two sides live in different places (a device's own update against a sketch it received)."""
    dots = (u_i * u_j).sum(dim=1)
    if m_i is None or m_j is None:
        sq_i, sq_j = (u_i * u_i).sum(dim=1), (u_j * u_j).sum(dim=1)
    else:
        sq_i = (u_i * u_i * m_j.to(u_i.dtype)).sum(dim=1)
        sq_j = (u_j * u_j * m_i.to(u_j.dtype)).sum(dim=1)
    norms = torch.sqrt(sq_i * sq_j)
    return torch.where(norms > eps, dots / norms.clamp_min(eps), torch.zeros_like(dots))


def paired_squared_distance(x_i: torch.Tensor, m_i: torch.Tensor | None, x_j: torch.Tensor,
                            m_j: torch.Tensor | None) -> torch.Tensor:
    """‖m_ij ∘ (x_i − x_j)‖² of row p of `x_i` with row p of `x_j` ([P] result)."""
    diff = x_i - x_j
    if m_i is not None and m_j is not None:
        diff = diff * (m_i & m_j).to(x_i.dtype)
    return (diff * diff).sum(dim=1)
