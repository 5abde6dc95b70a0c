"""Minibatch plans and stacked per-device samples shared by the trainers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchPlan:
    """Every device's minibatches of one round, ragged: no padding to the longest device.

    `batches` [total steps, B] holds local sample indices (-1 pads a device's last, short batch of an epoch);
    device i's steps are rows `start[i] : start[i] + steps[i]`. (A padded [M, S_max, B] tensor does not fit with
    heavy-tailed sizes: at 10,000 Synthetic devices it would take 28 GB.)
    """

    batches: torch.Tensor
    start: torch.Tensor
    steps: torch.Tensor

    def device(self, row: int) -> torch.Tensor:
        first = int(self.start[row])
        return self.batches[first:first + int(self.steps[row])]


def batch_plan(sizes: list[int], epochs: int, batch_size: int, generators: list[torch.Generator]) -> BatchPlan:
    """Device i gets `epochs` shuffled passes over its n_i samples in batches of B, one randperm per epoch from its
    own generator `generators[i]` (so its batches do not depend on which other devices train)."""
    plans = []
    for n, generator in zip(sizes, generators, strict=True):
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            pad = (-n) % batch_size
            plans.append(torch.cat([order, torch.full((pad,), -1, dtype=torch.long)]).view(-1, batch_size))
    steps = torch.tensor([epochs * -(-n // batch_size) for n in sizes], dtype=torch.long)
    start = torch.cumsum(steps, 0) - steps
    batches = torch.cat(plans) if plans else torch.empty(0, batch_size, dtype=torch.long)
    return BatchPlan(batches, start, steps)


class Stacked:
    """All devices' samples of one split concatenated, with per-device offsets, for gathered minibatches."""

    def __init__(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        self.sizes = [len(y) for y in ys]
        self.offsets = torch.tensor([0] + self.sizes[:-1]).cumsum(0)
        self.x = torch.cat(xs) if xs else torch.empty(0)
        self.y = torch.cat(ys) if ys else torch.empty(0, dtype=torch.long)

    def gather(self, devices: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, ...]:
        valid = local >= 0
        index = (self.offsets[devices][:, None] + local.clamp_min(0)).clamp_max(max(len(self.y) - 1, 0))
        flat = index.flatten()  # index_select: ~4x faster than advanced indexing on large stacks
        x = self.x.index_select(0, flat).view(*index.shape, *self.x.shape[1:])
        return x, self.y.index_select(0, flat).view(index.shape), valid


__all__ = ["BatchPlan", "Stacked", "batch_plan"]
