"""What a device does with the models it receives, and client-server aggregation.

* `NeighbourRegularizer` (dpmn, dpmp, dpcg, dpmn-r): keep what was received, fixed, as the references of the
  regularizer (3)-(4) during the next round's local training. The device's own model is not overwritten: it stays
  personalized.
* `NeighbourAveraging` (dfl): replace the own model by the uniform average of itself and what it received (D-PSGD).
* `ServerAveraging` (fedavg): participants download the server's model (unless they still hold it), train and
  upload their update; the server adds the average of the updates, weighted by data size. `ClientSampling` (or, with
  user-level DP, `PoissonSampling`) picks the participants. With secure aggregation the uploads are masked and the
  server learns only their sum (`SecureUploads`, secure_averaging.py).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from fedge.algorithms.base import Combiner, Penalty, Sampler
from fedge.algorithms.components.secure_averaging import SecureUploads
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core import regularizer
from fedge.core.aggregation import accumulate_in_order, positions_within
from fedge.experiment import RegularizerConfig, ServerConfig
from fedge.messaging import Inbox, Kind, Models, Role, route
from fedge.privacy.mechanisms import UserLevel


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
        k = ctx.agree_max(int(degree.max()))  # the widest inbox in the federation: results do not depend on sharding
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


class PoissonSampling(Sampler):
    """Each online device takes part with probability q, independently (its own "dp-sampling" draw of the round):
    the sampling user-level DP accounting assumes (McMahan et al. 2018). q = 1 takes everyone and draws nothing."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def participants(self, ctx: RunContext, round_number: int, online: torch.Tensor) -> torch.Tensor:
        if self.rate >= 1:
            return online
        draws = ctx.streams.uniform("dp-sampling", round_number, ctx.ids, 1)[:, 0]
        return online & (draws < self.rate)


def aggregate_updates(ctx: RunContext, values: torch.Tensor, from_rows: torch.Tensor, weighting: str,
                      dp: UserLevel | None, population: torch.Tensor, generator: torch.Generator | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the step to add to the aggregator's model, the weight mass of the senders) from the received updates
    `values` [P, d] of devices `from_rows`.

    Without DP: Σ_k w_k Δ_k / Σ_k w_k over the senders, summed in sender-id order. With user-level DP: the same
    weighted sum plus the Gaussian noise of `dp`, divided by the expected weight q·W of the `population` ([N] bool:
    the devices the aggregator sampled from) — a fixed denominator, so that one device moves the step by at most
    w_max·C / (q·W). With adaptive clipping a trailing coordinate of each upload carries the device's "within C" bit.
    """
    order = torch.argsort(ctx.ids[from_rows])
    if not torch.equal(order, torch.arange(len(order))):
        values, from_rows = values[order], from_rows[order]
    weights = client_weights(weighting, ctx.data_sizes[from_rows])
    if dp is None:
        return (weights.to(values.dtype) @ values) / weights.sum(), weights.sum()
    adaptive = dp.cfg.adaptive_clipping
    updates, within = (values[:, :-1], values[:, -1]) if adaptive else (values, torch.ones(len(values)))
    pool = client_weights(weighting, ctx.data_sizes[ctx.by_id(torch.nonzero(population).flatten())])
    assert generator is not None
    noisy = dp.noisy_sum(weights.to(values.dtype) @ updates, float(pool.max()) if len(pool) else 0.0, generator)
    dp.adapt(within, int(population.sum()), generator)
    return noisy / (dp.cfg.sample_rate * pool.sum()), weights.sum()


def upload_body(updates: torch.Tensor, dp: UserLevel | None, value_dtype: str) -> Models:
    """What participants upload: their updates; under user-level DP clipped to C (and, with adaptive clipping, with a
    trailing "within C" bit)."""
    if dp is None:
        return Models.one_each(updates, value_dtype=value_dtype)
    clipped, within = dp.clip(updates)
    if dp.cfg.adaptive_clipping:
        clipped = torch.cat([clipped, within[:, None]], dim=1)
    return Models.one_each(clipped, value_dtype=value_dtype)


def round_senders(ctx: RunContext, rnd: Round, dp: UserLevel | None) -> torch.Tensor:
    """The rows of this round's participants, in id order; under user-level DP the round's sampling is accounted
    first (every online device was subject to it, whether or not anyone was sampled)."""
    if dp is not None:
        dp.observe_population(int(rnd.online.sum()))
        if ctx.privacy is not None:
            ctx.privacy.record(torch.nonzero(rnd.online).flatten(), dp.update_noise_multiplier, dp.cfg.sample_rate)
    return ctx.by_id(torch.nonzero(rnd.participants).flatten())


class ServerAveraging(Combiner):
    """FedAvg's server (in the cloud: every message crosses the device-server link).

    A participant downloads the server's model at the start of a round unless its own model still is that model
    (everyone starts with the common initialisation x0); after training it uploads its update (its model minus the
    server's), and the server adds the average of the updates it received, weighted by data size, in sender-id
    order (`aggregate_updates`; with user-level DP, clipped updates and a noisy sum). Devices are evaluated with
    the server's model: it is what any member would download next.
    """

    def __init__(self, cfg: ServerConfig, dp: UserLevel | None = None, secure: SecureUploads | None = None) -> None:
        self.cfg = cfg
        self.dp = dp
        self.secure = secure  # masked uploads (secure.aggregation: secagg, secagg+) instead of plain ones
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
        senders = round_senders(ctx, rnd, self.dp)
        if len(senders) == 0:
            return
        self.held[senders] = -1  # they trained: their rows are no longer the server's model
        updates = rows_of(devices.bank, senders) - self.model[None, :]
        if self.secure is not None:
            secure_step = self.secure.step(ctx, rnd, senders, updates, self.dp, rnd.online)
            if secure_step is not None:  # None: the round was aborted, the model stays
                self.model = self.model + secure_step
                self.version += 1
            return
        up = ctx.transport.gather(route(Kind.MODEL, rnd.number, Role.DEVICE, Role.SERVER, senders, 0),
                                  upload_body(updates, self.dp, ctx.payload_dtype))
        assert isinstance(up.body, Models)
        generator = ctx.streams.generator("dp-noise", -1, rnd.number) if self.dp is not None else None
        step, _ = aggregate_updates(ctx, up.body.rows(), up.route.senders, self.cfg.weighting, self.dp, rnd.online,
                                    generator)
        self.model = self.model + step
        self.version += 1

    def served(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        return self.model[None, :].expand(devices.num_devices, -1)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "held": self.held,
                "dp": self.dp.state_dict() if self.dp is not None else None,
                "secure": self.secure.state_dict() if self.secure is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model, self.version, self.held = state["model"], int(state["version"]), state["held"]
        if self.dp is not None and state.get("dp") is not None:
            self.dp.load_state_dict(state["dp"])
        if self.secure is not None and state.get("secure") is not None:
            self.secure.load_state_dict(state["secure"])
