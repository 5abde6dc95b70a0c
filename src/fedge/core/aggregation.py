"""Aggregation and mixing of stacked models.

All functions take the parameter bank X [N, d] and return new tensors; none mutates its input.
"""

from __future__ import annotations

import torch


def weighted_average(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i x_i / Σ_i w_i over the leading dimension (FedAvg, McMahan et al. 2017, with w_i = |D_i|)."""
    w = weights.to(x.dtype)
    total = w.sum()
    if total <= 0:
        raise ValueError("weighted_average needs a positive total weight")
    return (w @ x) / total


def neighbour_mixing_matrix(adjacency: torch.Tensor, include_self: bool = True) -> torch.Tensor:
    """Row-stochastic W with W_ij = 1/(|S_i|+1) for j ∈ S_i ∪ {i} (uniform D-PSGD averaging)."""
    a = adjacency.to(torch.float32)
    if include_self:
        a = a + torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return a / a.sum(dim=1, keepdim=True).clamp_min(1.0)


def mix(x: torch.Tensor, mixing: torch.Tensor) -> torch.Tensor:
    """X' = W X: every device's new model as a weighted combination of the models it received."""
    return mixing.to(x.dtype) @ x


def masked_average(values: torch.Tensor, contributed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate-wise mean over contributors only.

    `values` [N, ...] holds each client's contribution, `contributed` [N, ...] (broadcastable) marks which
    coordinates each client actually sent. Returns (mean, count); where count is 0 the mean is 0. Used by federated
    matrix factorisation, where an item is averaged only over the clients that touched it.
    """
    c = contributed.to(values.dtype).expand_as(values)
    count = c.sum(dim=0)
    total = (values * c).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total)), count


def neighbour_average(x: torch.Tensor, adjacency: torch.Tensor, include_self: bool = True) -> torch.Tensor:
    """Uniform average of each device's own model and its neighbours' (D-PSGD mixing), via a sparse product.

    Equal to `mix(x, neighbour_mixing_matrix(adjacency))` but O(N·k·d) instead of O(N²·d).
    """
    n = x.shape[0]
    rows, cols = torch.nonzero(adjacency, as_tuple=True)
    if include_self:
        idx = torch.arange(n, device=x.device)
        rows, cols = torch.cat([rows, idx]), torch.cat([cols, idx])
    degree = torch.bincount(rows, minlength=n).to(x.dtype).clamp_min(1.0)
    weights = 1.0 / degree[rows]
    mixing = torch.sparse_coo_tensor(torch.stack([rows, cols]), weights, (n, n), check_invariants=False).coalesce()
    return torch.sparse.mm(mixing, x)


def accumulate_in_order(base: torch.Tensor, receivers: torch.Tensor, position: torch.Tensor, values: torch.Tensor,
                        slot: torch.Tensor) -> torch.Tensor:
    """base[r] + Σ of the messages to r, added one position at a time (position 0 first, then 1, ...).

    Message e goes to row `receivers[e]`, is the `position[e]`-th message of its receiver and carries
    `values[slot[e]]`. Adding by position makes each row's sum run in its messages' order whatever the rows'
    storage order, and gathers one [N, d] block at a time instead of all messages at once.
    """
    out = base.clone()
    if len(receivers) == 0:
        return out
    for step in range(int(position.max()) + 1):
        here = position == step
        out.index_add_(0, receivers[here], values.index_select(0, slot[here]))
    return out


def positions_within(receivers: torch.Tensor) -> torch.Tensor:
    """[E] position of each message among its receiver's messages, for messages grouped by receiver (in any order of
    receivers, each receiver's messages contiguous)."""
    if len(receivers) == 0:
        return receivers.clone()
    starts = torch.ones(len(receivers), dtype=torch.bool)
    starts[1:] = receivers[1:] != receivers[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(len(receivers)), 0), dim=0).values
    return torch.arange(len(receivers)) - first
