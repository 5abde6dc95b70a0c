"""What a device does with the models it receives, and client-server aggregation.

* `NeighbourRegularizer` (dpmn, dpmp, dpcg, dpmn-r): keep what was received, fixed, as the references of the
  regularizer (3)-(4) during the next round's local training. The device's own model is not overwritten: it stays
  personalized.
* `NeighbourAveraging` (dfl): replace the own model by the uniform average of itself and what it received (D-PSGD).
* `ServerAveraging` (fedavg): participants download the server's model (unless they still hold it), train, upload;
  the server averages the uploads weighted by data size. `ClientSampling` picks the participants.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from fedge.algorithms.base import Combiner, Penalty, Sampler
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core import regularizer
from fedge.core.aggregation import accumulate_in_order, positions_within, weighted_average
from fedge.experiment import RegularizerConfig, ServerConfig
from fedge.messaging import Inbox, Kind, Models, Role, route


class NeighbourRegularizer(Combiner):
    def __init__(self, cfg: RegularizerConfig) -> None:
        self.cfg = cfg

    def penalty(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> Penalty | None:
        """λ·∇h as a function of (parameters [M, d], device rows [M]), or None when nobody received anything."""
        lam, sigma = self.cfg.lam, self.cfg.sigma
        n = devices.num_devices
        degree = inbox.degree(n)
        if lam == 0 or len(inbox) == 0:
            return None
        k = int(degree.max())
        # Slot s of row i holds i's s-th message, senders in id order (padding: message 0, invalid, weight 0).
        slot = positions_within(inbox.receivers)
        order = torch.zeros(n, k, dtype=torch.long)
        valid = torch.zeros(n, k, dtype=torch.bool)
        order[inbox.receivers, slot] = torch.arange(len(inbox))
        valid[inbox.receivers, slot] = True
        masks = devices.masks

        def prepare(rows: torch.Tensor) -> regularizer.PreparedReferences:
            messages = order[rows].flatten()
            shape = (len(rows), k, -1)
            references = inbox.values(messages).view(shape)
            overlap = inbox.masks(messages).view(shape) & masks[rows, None, :]
            return regularizer.prepare_references(references, overlap, valid[rows])

        # Prepared lazily for the devices a trainer asks for ([M, k, d] tensors: for all 500 LeNet devices at once
        # that is ~1 GB), and kept while the same devices (or a prefix of them, as batched devices finish) ask again.
        # One cache per thread: the sequential trainer trains several devices at once on threads.
        per_thread = threading.local()

        def grad(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            ids, cached = getattr(per_thread, "last", (None, None))
            m = len(rows)
            if not isinstance(ids, torch.Tensor) or m > len(ids) or not torch.equal(rows, ids[:m]):
                ids, cached = rows.clone(), prepare(rows)
                per_thread.last = (ids, cached)
            assert isinstance(cached, regularizer.PreparedReferences)
            prepared = cached if m == len(ids) else regularizer.PreparedReferences(*(t[:m] for t in cached))
            return lam * regularizer.prepared_gradient(x, prepared, sigma)

        return grad


class NeighbourAveraging(Combiner):
    def combine(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        """x_i ← (x_i + Σ_{j∈S_i} x̃_j) / (|S_i| + 1) for every participant, summed in the senders' id order."""
        if len(inbox) == 0:
            return
        n = devices.num_devices
        summed = accumulate_in_order(devices.bank, inbox.receivers, positions_within(inbox.receivers),
                                     inbox.models.values, inbox.models.slot)
        mixed = summed / (inbox.degree(n).to(summed.dtype) + 1.0)[:, None]
        mixed = torch.where(rnd.participants[:, None], mixed, devices.bank)
        devices.bank = torch.where(devices.masks, mixed, 0.0)


def rows_of(bank: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """bank[rows] without a copy when `rows` is every row in order (everyone takes part)."""
    return bank if torch.equal(rows, torch.arange(len(bank))) else bank[rows]


def client_weights(weighting: str, data_sizes: torch.Tensor) -> torch.Tensor:
    """Aggregation weights of the given senders: |D_i| (FedAvg) or 1 (`server.weighting: uniform`)."""
    return data_sizes.to(torch.float32) if weighting == "data_size" else torch.ones(len(data_sizes))


class ClientSampling(Sampler):
    """FedAvg's client sampling: each round the server picks max(1, round(C·n)) of the n online devices uniformly
    without replacement (C = `server.sample_fraction`; C = 1 takes everyone and draws nothing): the devices whose
    "client-sampling" draw of the round is smallest."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg

    def participants(self, ctx: RunContext, round_number: int, online: torch.Tensor) -> torch.Tensor:
        count = int(online.sum())
        if self.cfg.sample_fraction >= 1 or count == 0:
            return online
        take = max(1, int(round(self.cfg.sample_fraction * count)))
        candidates = ctx.by_id(torch.nonzero(online).flatten())
        keys = ctx.streams.uniform("client-sampling", round_number, ctx.ids[candidates], 1)[:, 0]
        chosen = candidates[torch.argsort(keys, stable=True)[:take]]
        sampled = torch.zeros_like(online)
        sampled[chosen] = True
        return sampled


class ServerAveraging(Combiner):
    """FedAvg's server (in the cloud: every message crosses the device-server link).

    A participant downloads the server's model at the start of a round unless its own model still is that model
    (everyone starts with the common initialisation x0); after training it uploads its model, and the server
    replaces its model by the average of the uploads it received, weighted by data size, in sender-id order.
    Devices are evaluated with the server's model: it is what any member would download next.
    """

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.model = torch.zeros(0)  # [d]: the global model
        self.version = 0  # increments with every aggregation
        self.held = torch.zeros(0, dtype=torch.long)  # [N]: version of the server's model a device's row holds; -1

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        self.model, self.version = devices.initial.clone(), 0
        self.held = torch.zeros(ctx.num_devices, dtype=torch.long)

    def distribute(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> None:
        stale = ctx.by_id(torch.nonzero(rnd.participants & (self.held != self.version)).flatten())
        if len(stale) == 0:
            return
        got = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, Role.SERVER, Role.DEVICE, 0, stale),
                                      Models(self.model[None, :], torch.zeros(len(stale), dtype=torch.long),
                                             value_dtype=ctx.payload_dtype))
        assert isinstance(got.body, Models)
        devices.bank[got.route.receivers] = got.body.rows()
        self.held[got.route.receivers] = self.version

    def combine(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        senders = ctx.by_id(torch.nonzero(rnd.participants).flatten())
        if len(senders) == 0:
            return
        self.held[senders] = -1  # they trained: their rows are no longer the server's model
        up = ctx.transport.gather(route(Kind.MODEL, rnd.number, Role.DEVICE, Role.SERVER, senders, 0),
                                  Models.one_each(rows_of(devices.bank, senders), value_dtype=ctx.payload_dtype))
        assert isinstance(up.body, Models)
        values, from_rows = up.body.rows(), up.route.senders
        order = torch.argsort(ctx.ids[from_rows])  # the sum runs in sender-id order
        if not torch.equal(order, torch.arange(len(order))):
            values, from_rows = values[order], from_rows[order]
        self.model = weighted_average(values, client_weights(self.cfg.weighting, ctx.data_sizes[from_rows]))
        self.version += 1

    def served(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        return self.model[None, :].expand(devices.num_devices, -1)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "held": self.held}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model, self.version, self.held = state["model"], int(state["version"]), state["held"]
