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
        # Only devices whose scheduled density moves are re-pruned: at an unchanged density the magnitude rule over
        # the currently kept coordinates returns the current mask, so sorting those rows again is wasted work.
        rows = torch.nonzero(active & (new_density != old_density)).flatten()
        if len(rows):
            changed = magnitude_mask(state.bank[rows], ctx.layer_groups,
                                     torch.minimum(old_density, new_density)[rows], current=state.masks[rows])
            changed = regrow(changed, ctx.layer_groups, new_density[rows], ctx.generator)
            state.mask_version[rows] += (changed != state.masks[rows]).any(dim=1).long()
            state.masks = state.masks.clone()
            state.masks[rows] = changed
            state.bank = state.bank * state.masks
        state.prune_progress = progress
        state.last_val_accuracy = torch.where(active, val_accuracy, previous)
