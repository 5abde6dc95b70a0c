"""Adaptive magnitude pruning (DPMN step 2).

The rule, per device i after its local training in round t:

1. drop = (validation accuracy after the previous round) − (validation accuracy now).
2. With t = tol + 1/|val_i| (one validation sample flipping is never a drop: local validation sets are small):
   drop ≤ t: advance the schedule one step; t < drop ≤ 2·t: pause (density unchanged);
   drop > 2·t: back off one step (density rises; regrown coordinates restart at zero).
3. density = 1 − (1 − ρ_i)·min(1, steps / ramp_rounds), ρ_i the device's target (its bandwidth class).
4. Shrinking keeps the largest |x| per layer among currently kept coordinates; growing re-enables random pruned
   coordinates (each device's own "regrow" stream). Pruned coordinates are set to exactly zero and receive no
   gradient while pruned.
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.algorithms.base import Pruner
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core.masks import magnitude_mask, regrow, scheduled_density
from fedge.experiment import PruningConfig


class AdaptivePruner(Pruner):
    def __init__(self, cfg: PruningConfig) -> None:
        self.cfg = cfg
        self.progress = torch.zeros(0, dtype=torch.long)  # [N] pruning steps taken (the schedule's position)
        self.last_val_accuracy = torch.zeros(0)  # [N] validation accuracy after the previous round (-1 = none)

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        self.progress = torch.zeros(ctx.num_devices, dtype=torch.long)
        self.last_val_accuracy = torch.full((ctx.num_devices,), -1.0)

    def step(self, devices: DeviceState, ctx: RunContext, rnd: Round, val_accuracy: torch.Tensor) -> None:
        """Update masks of the participants from their validation accuracy [N]."""
        cfg, active = self.cfg, rnd.participants
        previous = self.last_val_accuracy
        drop = torch.where(previous >= 0, previous - val_accuracy, torch.zeros_like(val_accuracy))
        tolerance = cfg.tolerance + 1.0 / ctx.val_sizes.clamp_min(1).to(val_accuracy.dtype)
        step = torch.where(drop <= tolerance, 1, torch.where(drop <= 2 * tolerance, 0, -1))
        step = torch.where(active, step, torch.zeros_like(step))
        old_density = scheduled_density(ctx.target_density, self.progress, cfg.ramp_rounds)
        progress = (self.progress + step).clamp(0, max(cfg.ramp_rounds, 0))
        new_density = scheduled_density(ctx.target_density, progress, cfg.ramp_rounds)
        # Only devices whose scheduled density moves are re-pruned: at an unchanged density the magnitude rule over
        # the currently kept coordinates returns the current mask, so sorting those rows again is wasted work.
        rows = torch.nonzero(active & (new_density != old_density)).flatten()
        if len(rows):
            ids = ctx.ids[rows]

            def noise(local: torch.Tensor, start: int, stop: int) -> torch.Tensor:
                return ctx.streams.uniform("regrow", rnd.number, ids[local], torch.arange(start, stop))

            changed = magnitude_mask(devices.bank[rows], ctx.layer_groups,
                                     torch.minimum(old_density, new_density)[rows], current=devices.masks[rows])
            changed = regrow(changed, ctx.layer_groups, new_density[rows], noise)
            devices.mask_version[rows] += (changed != devices.masks[rows]).any(dim=1).long()
            devices.masks = devices.masks.clone()
            devices.masks[rows] = changed
            devices.bank = torch.where(devices.masks, devices.bank, 0.0)
        self.progress = progress
        self.last_val_accuracy = torch.where(active, val_accuracy, previous)

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "last_val_accuracy": self.last_val_accuracy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress, self.last_val_accuracy = state["progress"], state["last_val_accuracy"]
