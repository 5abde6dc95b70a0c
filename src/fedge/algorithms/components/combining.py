"""What a device does with the models it receives.

* `NeighbourRegularizer` (dpmn, dpmp, dpcg, dpmn-r): keep them, fixed, as the references of the regularizer (3)-(4)
  during the next round's local training. The device's own model is not overwritten: it stays personalized.
* `NeighbourAveraging` (dfl): replace the own model by the uniform average of itself and its neighbours (D-PSGD).
* `ServerAveraging` (fedavg): a server averages the participants' models weighted by data size and sends the
  result back to everyone; upload and download bytes are counted.
* `NoCombining` (local): nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core import regularizer
from fedge.core.aggregation import neighbour_average, weighted_average
from fedge.core.codec import encoded_size

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NeighbourRegularizer:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        """λ·∇h as a function of (parameters [M, d], device ids [M]), or None when nobody has neighbours."""
        lam, sigma = ctx.config.regularizer.lam, ctx.config.regularizer.sigma
        degree = state.neighbours.sum(dim=1)
        if lam == 0 or int(degree.max()) == 0:
            return None
        k = int(degree.max())
        order = torch.sort(state.neighbours.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
        valid = torch.gather(state.neighbours, 1, order)
        references = state.references[order]
        overlap = state.reference_masks[order] & state.masks[:, None, :]

        def grad(x: torch.Tensor, devices: torch.Tensor) -> torch.Tensor:
            return lam * regularizer.batched_gradient(x, references[devices], overlap[devices], valid[devices], sigma)

        return grad

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        return 0


class NeighbourAveraging:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        received = state.references * state.reference_masks
        mixed = neighbour_average(received, state.neighbours)
        # A device mixes its own current model (not its payload copy) with what it received.
        own_weight = 1.0 / (state.neighbours.sum(dim=1).to(mixed.dtype) + 1.0)
        mixed = mixed + own_weight[:, None] * (state.bank - received)
        state.bank = torch.where(state.alive[:, None], mixed, state.bank) * state.masks
        return 0


class ServerAveraging:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def combine(self, state: FederationState, ctx: RunContext, participants: torch.Tensor | None = None) -> int:
        """Average the participants' models; every live device downloads the result. Returns bytes moved."""
        senders = state.alive if participants is None else participants & state.alive
        if not bool(senders.any()):
            return 0
        weights = torch.where(senders, ctx.data_sizes.to(torch.float32), torch.zeros(()))
        global_model = weighted_average(state.bank, weights)
        size = encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False)
        moved = int(senders.sum()) * size + int(state.alive.sum()) * size
        state.bank = torch.where(state.alive[:, None], global_model[None, :].expand_as(state.bank), state.bank)
        return moved


class NoCombining:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        return 0
