"""FedAvg's uploads under homomorphic encryption (`secure.aggregation: ckks`, docs/secure.md): the server adds
encrypted updates and never sees a plaintext update *or* the plaintext model.

Protocol per round (every ciphertext a `Blobs` payload on the message layer, so the ledger counts the serialized
bytes):

0. once, before the first aggregation: the devices' key holder (the lowest participating id) sends the server the
   public CKKS context (no secret key; kind KEYS). The key pair is shared by the devices, set up among them before
   training (that exchange is not simulated or counted).
1. each participant u clips its update Δ_u = x_u − x (x: its copy of the global model) to [−clip, clip] per
   coordinate, encrypts it (`fedge.secure.he.Ckks`: ceil(d / 4096) ckks_vectors) and uploads the ciphertexts (kind
   MASKED);
2. the server, holding only the public context, forms Σ_u w_u · Enc(Δ_u) by plaintext multiplication with the
   integer weights w_u (data sizes, or 1) and sends the encrypted aggregate and W = Σ_u w_u (in the clear: the server
   knows the weights) down to the round's participants (kind DOWNLOAD with a `Blobs` body);
3. each receiver decrypts Σ w_u Δ_u, divides by W and adds the step to its copy of the global model.

Design: the *devices* hold the plaintext global model; the server stores only the encrypted aggregates. The
alternative — the server keeping an encrypted running model — needs a plaintext multiplication by 1/W every round,
one CKKS level each, so a fixed modulus chain ([60, 40, 60]: one level) would run out after one round (or need
bootstrapping, which TenSEAL does not offer). Devices that sat a round out (client sampling) catch up when next
sampled: the server sends them the encrypted aggregates of the rounds they missed (kept until every device has
them), and they apply the decrypted steps in order. Every device that has applied the same aggregates holds the
same model bit for bit (CKKS decryption is deterministic and the steps are added in the same order), so the
simulator decrypts each aggregate once — as the round's first receiver does — and counts every receiver's download;
`model` below is that common device copy, and devices are evaluated with it (what they hold after the round).

Threat model (docs/secure.md): an honest-but-curious server that colludes with no device. CKKS noise makes the
decrypted sum approximate (relative error ~1e-7, tests/secure/test_he.py); the decoder needs |Σ w_u Δ_u| < 2^19 per
coordinate, checked each round as W · clip < 2^19. Not bit-for-bit reproducible: TenSEAL draws keys and encryption
noise from system randomness.

With user-level DP (`privacy.mechanism: user`, DP-FedAvg) the noise is added by the devices *before* encryption
(`he_inputs`): each of the m participants clips its update to C (L2) and encrypts clip(Δ_u) + n_u / w_u with
n_u ~ N(0, σ²C²w_max²/m) from its own stream, so the homomorphic sum Σ w_u (·) carries exactly the server-side
mechanism's noise N(0, σ²C²w_max²) (w_max: the largest weight in the population sampled from); the devices divide
by q·W_pool instead of W. CKKS loses no participant mid-round (no dropouts are simulated), so all m noise shares are
always in the sum and the accountant records the same (σ, q): ε is unchanged. Adaptive clipping is refused.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from typing import Any

import numpy as np
import torch

from fedge.algorithms.components.combining import ServerAveraging, client_weights, round_senders, rows_of
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.config import ConfigError
from fedge.experiment import ServerConfig
from fedge.messaging import Blobs, Inbox, Kind, Role, route
from fedge.privacy.mechanisms import UserLevel
from fedge.secure.config import SecureConfig
from fedge.secure.he import pack_ciphertexts, unpack_ciphertexts  # numpy only: no extra needed

log = logging.getLogger(__name__)

CKKS_SUM_BOUND = 2.0 ** 19  # |Σ w_u Δ_u| per coordinate that the first 60-bit modulus decodes at scale 2^40


def he_inputs(ctx: RunContext, rnd: Round, senders: torch.Tensor, updates: torch.Tensor, weighting: str,
              clip: float, dp: UserLevel | None, population: torch.Tensor) -> tuple[list[int], np.ndarray, float]:
    """(the senders' integer weights w_u, what each encrypts [P, d] float64, what the decrypted weighted sum is
    divided by). Without DP: the updates clipped to [−clip, clip] per coordinate, and W = Σ w_u. With user-level DP:
    clip(Δ_u) (L2 to C, then per coordinate) + n_u / w_u, n_u ~ N(0, σ²C²w_max²/m) from the device's "dp-he-noise"
    stream, and q·W_pool, DP-FedAvg's fixed denominator (`population`: the devices the aggregator sampled from)."""
    weights = [int(w) for w in client_weights(weighting, ctx.data_sizes[senders]).round().tolist()]
    if dp is None:
        return weights, updates.to(torch.float64).clamp(-clip, clip).numpy(), float(sum(weights))
    pool = client_weights(weighting, ctx.data_sizes[ctx.by_id(torch.nonzero(population).flatten())]).double()
    clipped = dp.clip(updates)[0].to(torch.float64).clamp(-clip, clip)
    if dp.max_norm is not None and dp.update_noise_multiplier > 0:
        std = dp.update_noise_multiplier * dp.max_norm * float(pool.max()) / math.sqrt(len(senders))
        noise = torch.stack([torch.normal(0.0, 1.0, size=(updates.shape[1],), dtype=torch.float64,
                                          generator=ctx.streams.generator("dp-he-noise", int(i), rnd.number))
                             for i in ctx.ids[senders].tolist()])
        clipped = clipped + std * noise / torch.tensor(weights, dtype=torch.float64)[:, None]
    return weights, clipped.numpy(), dp.cfg.sample_rate * float(pool.sum())


def check_bound(total: int, clip: float) -> None:
    """CKKS at scale 2^40 decodes |Σ w_u Δ_u| < 2^19 per coordinate."""
    if total * clip >= CKKS_SUM_BOUND:
        raise ConfigError(f"secure.clip: total weight {total} × clip {clip:g} reaches 2^19, beyond what CKKS at "
                          f"scale 2^40 decodes; lower secure.clip or use server.weighting: uniform")


def pack_aggregate(divisor: float, ciphertexts: list[bytes]) -> bytes:
    """The encrypted aggregate as sent down: the divisor (float64, in the clear) and the summed ciphertexts."""
    return pack_ciphertexts([struct.pack("<d", divisor), *ciphertexts])


def unpack_aggregate(blob: bytes) -> tuple[float, list[bytes]]:
    """The inverse of `pack_aggregate`."""
    header, *ciphertexts = unpack_ciphertexts(blob)
    return struct.unpack("<d", header)[0], ciphertexts


class EncryptedAveraging(ServerAveraging):
    """FedAvg with CKKS-encrypted uploads and aggregates; `model` is the devices' (decrypted) global model."""

    def __init__(self, cfg: ServerConfig, secure: SecureConfig, dp: UserLevel | None = None) -> None:
        super().__init__(cfg, dp)
        try:
            from fedge.secure import he
        except ImportError as err:  # pragma: no cover - the extra is installed in the tests
            raise ConfigError(f"secure.aggregation: {secure.aggregation} needs the secure extra "
                              f"(pip install 'fedge[secure]'): {err}") from None
        self.he, self.clip = he, secure.clip
        self.scheme: Any = None  # he.Ckks: the devices' key pair (made at start)
        self.server_context: bytes | None = None  # the public context as the server received it
        self.pending: dict[int, bytes] = {}  # version v -> the encrypted aggregate of v (W first), until all have it
        self.synced = torch.zeros(0, dtype=torch.long)  # [N] version of the global model each device's copy is
        self.costs: list[dict[str, float]] = []  # per aggregation: seconds and bytes (see `round_costs`)

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        super().start(ctx, devices)
        if ctx.transport.name not in ("direct", "loopback"):
            raise ConfigError("secure.aggregation: ckks runs in one process only (each process of a distributed "
                              "run would make its own key pair)")
        self.scheme = self.he.Ckks()
        self.server_context, self.pending, self.costs = None, {}, []
        self.synced = torch.zeros(ctx.num_devices, dtype=torch.long)

    def _catch_up(self, ctx: RunContext, devices: DeviceState, rnd: Round, rows: torch.Tensor) -> None:
        """Send `rows` (in id order) the encrypted aggregates they have not applied; they decrypt and apply them."""
        missing = [self.he.pack_ciphertexts([self.pending[v] for v in range(int(self.synced[r]) + 1,
                                                                            self.version + 1)])
                   for r in rows.tolist()]
        got = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, Role.SERVER, Role.DEVICE, 0, rows),
                                      Blobs(tuple(missing)))
        devices.bank[got.route.receivers] = self.model  # each applied the same decrypted steps in the same order
        self.held[got.route.receivers] = self.version
        self.synced[got.route.receivers] = self.version

    def distribute(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> None:
        stale = ctx.by_id(torch.nonzero(rnd.participants & (self.synced != self.version)).flatten())
        if len(stale):
            self._catch_up(ctx, devices, rnd, stale)
        # Participants whose working model drifted from their (current) copy of the global model restore it locally.
        restore = ctx.by_id(torch.nonzero(rnd.participants & (self.held != self.version)).flatten())
        devices.bank[restore] = self.model
        self.held[restore] = self.version

    def _send_context(self, ctx: RunContext, rnd: Round, senders: torch.Tensor) -> None:
        holder = senders[:1]  # the lowest participating id
        got = ctx.transport.gather(route(Kind.KEYS, rnd.number, Role.DEVICE, Role.SERVER, holder, 0),
                                   Blobs((self.scheme.public_context_bytes,)))
        assert isinstance(got.body, Blobs)
        self.server_context = got.body.blobs[0]

    def combine(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        senders = round_senders(ctx, rnd, self.dp)
        if len(senders) == 0:
            return
        if self.server_context is None:
            self._send_context(ctx, rnd, senders)
        he, scheme = self.he, self.scheme
        self.held[senders] = -1  # they trained: their rows are no longer the global model
        updates = rows_of(devices.bank, senders) - self.model[None, :]
        weights, inputs, divisor = he_inputs(ctx, rnd, senders, updates, self.cfg.weighting, self.clip, self.dp,
                                             rnd.online)
        check_bound(sum(weights), self.clip)
        clock = time.perf_counter()
        uploads = [he.pack_ciphertexts(scheme.encrypt(values)) for values in inputs]
        encrypt_s = time.perf_counter() - clock
        up = ctx.transport.gather(route(Kind.MASKED, rnd.number, Role.DEVICE, Role.SERVER, senders, 0),
                                  Blobs(tuple(uploads)))
        assert isinstance(up.body, Blobs)
        weight_of = dict(zip(senders.tolist(), weights))
        received = [he.unpack_ciphertexts(b) for b in up.body.blobs]
        clock = time.perf_counter()  # the server: public context only
        aggregate = pack_aggregate(divisor, scheme.weighted_sum(received, [weight_of[int(r)] for r in up.route.senders],
                                                                self.server_context))
        aggregate_s = time.perf_counter() - clock
        version = self.version + 1
        self.pending[version] = aggregate
        down = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, Role.SERVER, Role.DEVICE, 0, senders),
                                       Blobs((aggregate,) * len(senders)))
        assert isinstance(down.body, Blobs)
        clock = time.perf_counter()  # one device decrypts (every receiver gets the same plaintext)
        divisor, summed = unpack_aggregate(down.body.blobs[0])
        step = scheme.decrypt_mean(summed, divisor, ctx.dim)
        decrypt_s = time.perf_counter() - clock
        self.model = self.model + torch.from_numpy(step).to(self.model.dtype)
        self.version = version
        devices.bank[down.route.receivers] = self.model
        self.held[down.route.receivers] = version
        self.synced[down.route.receivers] = version
        oldest = int(self.synced.min())
        self.pending = {v: blob for v, blob in self.pending.items() if v > oldest}
        cost = {"round": rnd.number, "encrypt_s": encrypt_s, "aggregate_s": aggregate_s, "decrypt_s": decrypt_s,
                "upload_bytes": float(sum(len(b) for b in uploads)), "aggregate_bytes": float(len(aggregate))}
        self.costs.append(cost)
        log.info("ckks round %d: encrypt %.3f s (%d devices), aggregate %.3f s, decrypt %.3f s (one device)",
                 rnd.number, encrypt_s, len(senders), aggregate_s, decrypt_s)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({"he_context": self.scheme.secret_context_bytes() if self.scheme is not None else None,
                      "server_context": self.server_context, "pending": dict(self.pending), "synced": self.synced,
                      "costs": [dict(c) for c in self.costs]})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("he_context") is not None:
            self.scheme = self.he.Ckks(secret_context=state["he_context"])
        self.server_context, self.pending = state.get("server_context"), dict(state.get("pending", {}))
        self.synced = state.get("synced", self.synced)
        self.costs = [dict(c) for c in state.get("costs", [])]

    def report_round(self, round_number: int) -> dict[str, Any]:
        return round_report(self.costs, round_number)

    def report(self) -> dict[str, Any]:
        return run_report(self.costs)


COST_KEYS = ("encrypt_s", "aggregate_s", "decrypt_s", "upload_bytes", "aggregate_bytes")


def costs_of_round(costs: list[dict[str, float]], round_number: int) -> dict[str, float]:
    """The round's costs summed over its aggregations (hfl: one per edge server; fedavg: one), {} if none."""
    mine = [c for c in costs if c["round"] == round_number]
    if not mine:
        return {}
    return {"aggregations": len(mine), **{k: float(sum(c[k] for c in mine)) for k in COST_KEYS}}


def round_costs(costs: list[dict[str, float]]) -> dict[str, float]:
    """Mean per-round seconds (encrypt: all devices; aggregate: the aggregators; decrypt: one device per aggregate)
    and bytes, over the rounds that aggregated."""
    rounds = [costs_of_round(costs, r) for r in sorted({int(c["round"]) for c in costs})]
    if not rounds:
        return {}
    return {k: float(np.mean([r[k] for r in rounds])) for k in rounds[0]}


def round_report(costs: list[dict[str, float]], round_number: int) -> dict[str, Any]:
    """A round's metrics record entry (`Combiner.report_round`): {"he": its summed costs}, or nothing."""
    mine = costs_of_round(costs, round_number)
    return {"he": mine} if mine else {}


def run_report(costs: list[dict[str, float]]) -> dict[str, Any]:
    """summary.json's entry (`Combiner.report`): the per-round costs and their means (this process's rounds and
    those restored from a checkpoint)."""
    rounds = sorted({int(c["round"]) for c in costs})
    return {"he": {"scheme": "ckks", "per_round_mean": round_costs(costs),
                   "per_round": [{"round": r, **costs_of_round(costs, r)} for r in rounds]}}


__all__ = ["COST_KEYS", "EncryptedAveraging", "check_bound", "costs_of_round", "he_inputs", "pack_aggregate",
           "unpack_aggregate", "round_costs", "round_report", "run_report"]
