"""Adaptive magnitude pruning (DPMN step 2).

The rule, per device i after its local training in round t:

1. drop = (validation accuracy after the previous round) − (validation accuracy now).
2. With t = tol + 1/|val_i| (one validation sample flipping is never a drop: local validation sets are small):
   drop ≤ t: advance the schedule one step; t < drop ≤ 2·t: pause (density unchanged);
   drop > 2·t: back off one step (density rises; regrown coordinates restart at zero).
3. density = 1 − (1 − ρ_i)·min(1, steps / ramp_rounds), ρ_i the device's target (its bandwidth class).
4. Shrinking keeps the largest |x| per layer among currently kept coordinates; growing re-enables random pruned
   coordinates. Pruned coordinates are set to exactly zero and receive no gradient while pruned.
"""

from __future__ import annotations

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core.masks import magnitude_mask, regrow, scheduled_density


class AdaptivePruner:
    def step(self, state: FederationState, ctx: RunContext, val_accuracy: torch.Tensor,
             active: torch.Tensor) -> None:
        """Update masks of the `active` devices [N] bool from their validation accuracy [N]."""
        cfg = ctx.config.pruning
        previous = state.last_val_accuracy
        drop = torch.where(previous >= 0, previous - val_accuracy, torch.zeros_like(val_accuracy))
        tolerance = cfg.tolerance + 1.0 / ctx.val_sizes.clamp_min(1).to(val_accuracy.dtype)
        step = torch.where(drop <= tolerance, 1, torch.where(drop <= 2 * tolerance, 0, -1))
        step = torch.where(active, step, torch.zeros_like(step))
        old_density = scheduled_density(ctx.target_density, state.prune_progress, cfg.ramp_rounds)
        progress = (state.prune_progress + step).clamp(0, max(cfg.ramp_rounds, 0))
        new_density = scheduled_density(ctx.target_density, progress, cfg.ramp_rounds)
        masks = magnitude_mask(state.bank, ctx.layer_groups, torch.minimum(old_density, new_density),
                               current=state.masks)
        masks = regrow(masks, ctx.layer_groups, new_density, ctx.generator)
        masks = torch.where(active[:, None], masks, state.masks)
        state.mask_version = state.mask_version + (masks != state.masks).any(dim=1).long()
        state.masks = masks
        state.bank = state.bank * state.masks
        state.prune_progress = progress
        state.last_val_accuracy = torch.where(active, val_accuracy, previous)
