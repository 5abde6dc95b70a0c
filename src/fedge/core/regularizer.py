"""The saturating neighbour regularizer of DPMN, paper equations (2)-(4), with an explicit distance scale σ.

    h_i(x̃_i) = 1/|S_i| · Σ_{j∈S_i} σ·|m_ij| · J(z_ij),   J(z) = 1 − exp(−z/σ),
    z_ij = ‖m_ij ∘ (x̃_i − x̃_j)‖² / |m_ij|   (the mean squared difference on the overlap).

Why not the paper's literal J(‖·‖²) = 1 − exp(−‖·‖²): for real models the raw squared distance is in the tens or
hundreds (LeNet-5 has 21k-62k coordinates), exp(−z) underflows and the gradient vanishes: the regularizer does
nothing. Normalising by the overlap size makes z independent of model size; σ is the mean squared difference at
which the pull starts to saturate; the factor σ·|m_ij| keeps the pull per coordinate independent of model size:

    ∇h_i = 1/|S_i| · Σ_j 2·exp(−z_ij/σ) · m_ij ∘ (x̃_i − x̃_j).

So a close neighbour (z ≪ σ) pulls like the paper's squared-norm regularizer (2) (σ|m|J(z) → ‖m∘(x̃_i − x̃_j)‖²),
and a distant one (z ≫ σ) pulls with weight exp(−z/σ) → 0: the attention-style saturation of (4) and of FedAMP
(Huang et al. AAAI 2021). λ·2 is then the proximal coefficient of an identical neighbour, as μ in FedProx.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def pair_terms(x_i: torch.Tensor, neighbours: torch.Tensor, overlap: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(diff, z, overlap size) for one device against its neighbours: diff [k, d] is m_ij ∘ (x_i − x_j)."""
    m = overlap.to(x_i.dtype)
    diff = m * (x_i[None, :] - neighbours)
    size = m.sum(dim=1).clamp_min(1.0)
    z = (diff * diff).sum(dim=1) / size
    return diff, z, size


def value(x_i: torch.Tensor, neighbours: torch.Tensor, overlap: torch.Tensor, sigma: float) -> torch.Tensor:
    """h_i: the mean over the k rows of `neighbours` of σ·|m_ij|·J(z_ij) (0 with no neighbours)."""
    if neighbours.shape[0] == 0:
        return x_i.new_zeros(())
    _, z, size = pair_terms(x_i, neighbours, overlap)
    return (sigma * size * (1.0 - torch.exp(-z / sigma))).mean()


def gradient(x_i: torch.Tensor, neighbours: torch.Tensor, overlap: torch.Tensor, sigma: float) -> torch.Tensor:
    """∇h_i in closed form (tested against autograd of `value`)."""
    if neighbours.shape[0] == 0:
        return torch.zeros_like(x_i)
    diff, z, _ = pair_terms(x_i, neighbours, overlap)
    weight = 2.0 * torch.exp(-z / sigma)
    return (weight[:, None] * diff).sum(dim=0) / neighbours.shape[0]


def batched_gradient(x: torch.Tensor, references: torch.Tensor, overlap: torch.Tensor, valid: torch.Tensor,
                     sigma: float) -> torch.Tensor:
    """∇h_i for M devices at once: x [M, d], references [M, k, d], overlap [M, k, d] bool, valid [M, k] bool
    (padding slots of devices with fewer than k neighbours are invalid). Equals `gradient` row by row."""
    m = (overlap & valid[:, :, None]).to(x.dtype)
    diff = m * (x[:, None, :] - references)
    size = m.sum(dim=2).clamp_min(1.0)
    z = (diff * diff).sum(dim=2) / size
    weight = 2.0 * torch.exp(-z / sigma) * valid.to(x.dtype)
    count = valid.sum(dim=1).clamp_min(1).to(x.dtype)
    return (weight[:, :, None] * diff).sum(dim=1) / count[:, None]


class PreparedReferences(NamedTuple):
    """Per-round constants of the batched gradient, computed once while the references stay fixed."""

    mask: torch.Tensor  # [M, k, d] float: m_ij (zero for padding slots)
    masked_refs: torch.Tensor  # [M, k, d]: m_ij ∘ x̃_j
    refs_sq: torch.Tensor  # [M, k]: ‖m_ij ∘ x̃_j‖²
    size: torch.Tensor  # [M, k]: |m_ij| (at least 1)
    weight: torch.Tensor  # [M, k]: 1/|S_i| for valid slots, 0 for padding


def prepare_references(references: torch.Tensor, overlap: torch.Tensor, valid: torch.Tensor) -> PreparedReferences:
    m = (overlap & valid[:, :, None]).to(references.dtype)
    masked = m * references
    v = valid.to(references.dtype)
    return PreparedReferences(m, masked, (masked * references).sum(dim=2), m.sum(dim=2).clamp_min(1.0),
                              v / v.sum(dim=1, keepdim=True).clamp_min(1.0))


def prepared_gradient(x: torch.Tensor, prepared: PreparedReferences, sigma: float) -> torch.Tensor:
    """`batched_gradient` with the per-round constants precomputed: four batched matrix products per call.

    ‖m∘(x − r)‖² = (x²)·m − 2·x·(m∘r) + ‖m∘r‖², and Σ_k w_k m_k∘(x − r_k) = x∘(Σ_k w_k m_k) − Σ_k w_k (m_k∘r_k).
    """
    m, masked, refs_sq, size, slot_weight = prepared
    sq = torch.bmm(m, (x * x)[:, :, None])[..., 0] - 2 * torch.bmm(masked, x[:, :, None])[..., 0] + refs_sq
    w = (2.0 * torch.exp(-sq.clamp_min(0) / size / sigma) * slot_weight)[:, None, :]
    return x * torch.bmm(w, m)[:, 0, :] - torch.bmm(w, masked)[:, 0, :]
