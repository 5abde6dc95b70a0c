"""The algorithm contract.

An algorithm is a composition of three parts, and the round loop (fedge.runtimes.rounds) is written once against them:

* `pruner`   — updates masks after local training (or None: models stay dense);
* `selector` — chooses whom each device receives from this round and reports the bytes its scoring needed
               (or None: no peer-to-peer exchange);
* `combiner` — says what local training adds to the loss gradient (`penalty`) and what a device does with the
               received models (`combine`, returning any bytes it moved itself, e.g. a server's uploads).

Algorithms never import runtimes; they only read the `RunContext` and update the `FederationState`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (params [M, d], device ids [M]) -> grad


class Pruner(Protocol):
    def step(self, state: FederationState, ctx: RunContext, val_accuracy: torch.Tensor,
             active: torch.Tensor) -> None: ...


class Selector(Protocol):
    def select(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]: ...


class Combiner(Protocol):
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None: ...

    def combine(self, state: FederationState, ctx: RunContext) -> int: ...


class Algorithm(Protocol):
    name: str
    description: str
    pruner: Pruner | None
    selector: Selector | None
    combiner: Combiner
