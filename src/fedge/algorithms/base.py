"""The algorithm contract: an algorithm is a composition of components, and the round loop
(fedge.runtimes.rounds) is written once against them. Every hook is declared here with its default.

* `Sampler.participants`  — which online devices take part (default: all of them);
* `Combiner.distribute`   — before training, aggregators send participants their model (default: nothing);
* `Combiner.penalty`      — what local training adds to the loss gradient, e.g. λ·∇h_i (default: nothing);
* `Pruner.step`           — after training, update masks from local validation accuracy (optional component);
* `Selector.select`       — whom each device receives from this round (optional; none = no peer exchange);
* `Selector.observe`      — learn from what was received (default: nothing);
* `Combiner.combine`      — use what was received or aggregate uploads (default: nothing);
* `Combiner.served`       — the models devices are evaluated with when an aggregator serves them (default: own);
* `Combiner.report_round` / `Combiner.report` — measurements the runtime adds to a round's metrics record and to
  summary.json, e.g. encryption seconds (default: none).

Each component is built from its own config section, allocates its per-device state in `start`, and hands that
state to checkpoints with `state_dict` / `load_state_dict`, as `torch.optim` optimizers do. Algorithms never import
runtimes; they talk to other devices only through `ctx.transport`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.messaging.inbox import Inbox

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (params [M, d], device rows [M]) -> grad


class Component:
    """Base of every component: no per-run state unless it says otherwise."""

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        """Called once before the first round: allocate per-device state."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class Sampler(Component):
    def participants(self, ctx: RunContext, round_number: int, online: torch.Tensor) -> torch.Tensor:
        """[N] bool: who takes part among the `online` devices."""
        return online


class Pruner(Component, ABC):
    @abstractmethod
    def step(self, devices: DeviceState, ctx: RunContext, rnd: Round, val_accuracy: torch.Tensor) -> None:
        """Update the participants' masks from their validation accuracy [N] after local training."""


class Selector(Component, ABC):
    pulls: bool = True  # receivers request the models they chose; False: senders push on a fixed topology
    probes: bool = False  # candidates release similarity sketches on request (a second release per round)

    @abstractmethod
    def select(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        """[N, N] bool: row i holds the devices i receives from this round."""

    def observe(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        """Learn from the models just received."""


class Combiner(Component):
    def distribute(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> None:
        """Before training: send participants what they start from."""

    def penalty(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> Penalty | None:
        """The gradient local training adds (received models held fixed), or None."""
        return None

    def combine(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        """After the exchange: use what was received, or upload and aggregate."""

    def served(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor | None:
        """[N, d] models to evaluate devices with, when an aggregator's model is what they use; None: their own."""
        return None

    def report_round(self, round_number: int) -> dict[str, Any]:
        """Measurements of round `round_number` for its metrics record (JSON values; keys not the runtime's)."""
        return {}

    def report(self) -> dict[str, Any]:
        """Run-level measurements for summary.json (JSON values; keys not the runtime's)."""
        return {}


@dataclass
class Algorithm:
    """A named composition of components (see the module docstring for the order of the hooks)."""

    name: str
    combiner: Combiner = field(default_factory=Combiner)
    pruner: Pruner | None = None
    selector: Selector | None = None
    sampler: Sampler = field(default_factory=Sampler)

    def components(self) -> dict[str, Component]:
        parts: dict[str, Component | None] = {"sampler": self.sampler, "pruner": self.pruner,
                                               "selector": self.selector, "combiner": self.combiner}
        return {name: part for name, part in parts.items() if part is not None}

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        for part in self.components().values():
            part.start(ctx, devices)

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.components().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.components().items():
            part.load_state_dict(state.get(name, {}))


__all__ = ["Algorithm", "Combiner", "Component", "Penalty", "Pruner", "Sampler", "Selector"]
