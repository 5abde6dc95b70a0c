"""What a device does with the models it receives.

* `NeighbourRegularizer` (dpmn, dpmp, dpcg, dpmn-r): keep them, fixed, as the references of the regularizer (3)-(4)
  during the next round's local training. The device's own model is not overwritten: it stays personalized.
* `NeighbourAveraging` (dfl): replace the own model by the uniform average of itself and its neighbours (D-PSGD).
* `ServerAveraging` (fedavg): a server averages the participants' models weighted by data size and sends the
  result back; upload and download bytes are counted (as backhaul). `ClientSampling` picks the participants.
* `NoCombining` (local): nothing.
"""

from __future__ import annotations

import threading
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
        # Slot s of row i holds i's s-th neighbour in index order (padding: device 0, invalid, weight 0).
        rows, cols = torch.nonzero(state.neighbours, as_tuple=True)
        slot = torch.arange(len(rows)) - (torch.cumsum(degree, 0) - degree)[rows]
        order = torch.zeros(state.num_devices, k, dtype=torch.long)
        valid = torch.zeros(state.num_devices, k, dtype=torch.bool)
        order[rows, slot] = cols
        valid[rows, slot] = True
        references, reference_masks, masks = state.references, state.reference_masks, state.masks

        def prepare(devices: torch.Tensor) -> regularizer.PreparedReferences:
            slots = order[devices]
            return regularizer.prepare_references(references[slots],
                                                  reference_masks[slots] & masks[devices, None, :], valid[devices])

        # Prepared lazily for the devices a trainer asks for ([M, k, d] tensors: for all 500 LeNet devices at once
        # that is ~1 GB), and kept while the same devices (or a prefix of them, as batched devices finish) ask again.
        # One cache per thread: the sequential trainer trains several devices at once on threads.
        per_thread = threading.local()

        def grad(x: torch.Tensor, devices: torch.Tensor) -> torch.Tensor:
            ids, cached = getattr(per_thread, "last", (None, None))
            n = len(devices)
            if not isinstance(ids, torch.Tensor) or n > len(ids) or not torch.equal(devices, ids[:n]):
                ids, cached = devices.clone(), prepare(devices)
                per_thread.last = (ids, cached)
            assert isinstance(cached, regularizer.PreparedReferences)
            rows = cached if n == len(ids) else regularizer.PreparedReferences(*(t[:n] for t in cached))
            return lam * regularizer.prepared_gradient(x, rows, sigma)

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


def client_weights(ctx: RunContext, senders: torch.Tensor) -> torch.Tensor:
    """[N] aggregation weights: |D_i| (FedAvg) or 1 (`server.weighting: uniform`), zero for non-senders."""
    base = ctx.data_sizes.to(torch.float32) if ctx.config.server.weighting == "data_size" else \
        torch.ones(len(senders))
    return torch.where(senders, base, torch.zeros(()))


class ClientSampling:
    """FedAvg's client sampling: each round the server picks max(1, round(C·n)) of the n online devices uniformly
    without replacement (C = `server.sample_fraction`; C = 1 takes everyone and draws nothing)."""

    def participants(self, state: FederationState, ctx: RunContext, online: torch.Tensor) -> torch.Tensor:
        fraction = ctx.config.server.sample_fraction
        count = int(online.sum())
        if fraction >= 1 or count == 0:
            return online
        take = max(1, int(round(fraction * count)))
        candidates = torch.nonzero(online).flatten()
        chosen = candidates[torch.randperm(count, generator=ctx.generator)[:take]]
        sampled = torch.zeros_like(online)
        sampled[chosen] = True
        return sampled


class ServerAveraging:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        """Average the participants' (`state.alive` during a round) models; returns bytes moved.

        Each participant uploads its model and downloads the new global model (2 dense payloads, all over the
        backhaul: the server is in the cloud). The global model is written to every member's row: it is what any
        member downloads when it next takes part, and what is evaluated on its test data.
        """
        senders = state.alive
        receivers = state.members if state.members is not None else state.alive
        if not bool(senders.any()):
            return 0
        global_model = weighted_average(state.bank, client_weights(ctx, senders))
        size = encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False)
        moved = 2 * int(senders.sum()) * size
        state.bank = torch.where(receivers[:, None], global_model[None, :].expand_as(state.bank), state.bank)
        state.bytes_backhaul_total += moved
        return moved


class NoCombining:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        return 0
