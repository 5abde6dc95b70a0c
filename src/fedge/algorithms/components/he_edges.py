"""hfl's device → edge uploads under homomorphic encryption (`secure.aggregation: ckks`, docs/secure.md): each edge
server adds its devices' CKKS-encrypted updates without the secret key and learns only its cluster's weighted mean,
as with SecAgg(+) for hfl (`SecureUploads`); the edge → cloud level stays plaintext (an edge model is an aggregate).

Per round and aggregator (edge server k, or the cloud for devices attached to it directly), every ciphertext a
`Blobs` payload on the message layer (the ledger counts the serialized bytes, on the device-edge link for an edge):

0. once per aggregator, before its first aggregation: its lowest participating device sends it the public CKKS
   context (kind KEYS; no secret key). One key pair is shared by all devices, set up among them before training
   (not simulated); a device re-attached to another edge after a leader failure can then still take part.
1. each participant u clips its update Δ_u = x_u − x_g (x_g: its edge server's model, which it downloaded) to
   [−clip, clip] per coordinate, encrypts it (`fedge.secure.he.Ckks`) and uploads it (kind MASKED);
2. the aggregator, with the public context only, forms Σ_u w_u · Enc(Δ_u) (integer weights w_u: data sizes, or 1)
   and sends it with W = Σ w_u to its *decryptor*, the lowest participating device id (kind DOWNLOAD); under
   user-level DP (DP-HFL) each device encrypts its L2-clipped update plus its share of the edge's noise
   (`he_averaging.he_inputs`) and the divisor is q·W_pool, as in fedavg;
3. the decryptor decrypts, divides by W and returns the mean step in fp32 (kind UNMASK: it unmasks the sum, as a
   SecAgg survivor's shares do); the aggregator adds it to its model and reports the mass W to the cloud.

Why the edge learns the mean (unlike fedavg's `EncryptedAveraging`, where only devices hold the plaintext model):
HierFAVG's cloud averages the *edge models*, so each edge server must hold its model in the clear to send it up —
exactly what SecAgg for hfl reveals, and no more: no single device's update. A round with one participant at an
aggregator would reveal that device's update, so that aggregator skips the round (its model stays, a warning says
why), as SecAgg's abort does. Threat model and caveats as in fedavg: honest-but-curious aggregators colluding with
no device; keys from TenSEAL's system randomness, so runs are not bit-for-bit reproducible; |Σ w_u Δ_u| < 2^19.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from fedge.algorithms.components.he_averaging import (
    check_bound,
    he_inputs,
    pack_aggregate,
    round_report,
    run_report,
    unpack_aggregate,
)
from fedge.algorithms.context import Round, RunContext
from fedge.config import ConfigError
from fedge.messaging import Blobs, Kind, Role, route
from fedge.privacy.mechanisms import UserLevel
from fedge.secure.config import SecureConfig

log = logging.getLogger(__name__)


class EncryptedUploads:
    """CKKS-encrypted device → aggregator uploads, one encrypted aggregation per aggregator and round; the same
    `step` contract as `SecureUploads` (the step to add, or None; `last["mass"]`)."""

    def __init__(self, cfg: SecureConfig, weighting: str) -> None:
        try:
            from fedge.secure import he
        except ImportError as err:  # pragma: no cover - the extra is installed in the tests
            raise ConfigError(f"secure.aggregation: {cfg.aggregation} needs the secure extra "
                              f"(pip install 'fedge[secure]'): {err}") from None
        self.he, self.clip, self.weighting = he, cfg.clip, weighting
        self.scheme: Any = None  # he.Ckks: the devices' shared key pair, made at the first aggregation
        self.contexts: dict[str, bytes] = {}  # aggregator ("edge k" / "server") -> the public context it received
        self.costs: list[dict[str, float]] = []  # per aggregation: round, seconds, bytes
        self.skipped: list[tuple[int, str]] = []  # (round, aggregator) skipped: a single participant
        self.last: dict[str, Any] = {}

    def _keys(self, ctx: RunContext, rnd: Round, holder: torch.Tensor, aggregator: tuple[Role, int]) -> bytes:
        name = f"{aggregator[0].name.lower()} {aggregator[1]}"
        if name not in self.contexts:
            got = ctx.transport.gather(route(Kind.KEYS, rnd.number, Role.DEVICE, aggregator[0], holder,
                                             aggregator[1]), Blobs((self.scheme.public_context_bytes,)))
            assert isinstance(got.body, Blobs)
            self.contexts[name] = got.body.blobs[0]
        return self.contexts[name]

    def step(self, ctx: RunContext, rnd: Round, senders: torch.Tensor, updates: torch.Tensor, dp: UserLevel | None,
             population: torch.Tensor, aggregator: tuple[Role, int] = (Role.SERVER, 0)) -> torch.Tensor | None:
        """The step to add to the aggregator's model from the updates [P, d] of `senders` (rows, in id order), or
        None (a single participant: not aggregated). Under user-level DP the devices add the aggregator's noise in
        shares before encrypting (`he_inputs`); `population`: the devices it sampled from."""
        if ctx.transport.name not in ("direct", "loopback"):
            raise ConfigError("secure.aggregation: ckks runs in one process only (each process of a distributed "
                              "run would make its own key pair)")
        role, number = aggregator
        where = f"{role.name.lower()} {number}"
        if len(senders) < 2:
            log.warning("ckks round %d: %s has a single participant (device %d); its update would be the aggregate, "
                        "so %s does not aggregate this round", rnd.number, where, int(ctx.ids[senders[0]]), where)
            self.skipped.append((rnd.number, where))
            self.last = {"skipped": where}
            return None
        if self.scheme is None:
            self.scheme = self.he.Ckks()
        he, scheme = self.he, self.scheme
        public = self._keys(ctx, rnd, senders[:1], aggregator)
        weights, inputs, divisor = he_inputs(ctx, rnd, senders, updates, self.weighting, self.clip, dp, population)
        check_bound(sum(weights), self.clip)
        clock = time.perf_counter()
        uploads = [he.pack_ciphertexts(scheme.encrypt(values)) for values in inputs]
        encrypt_s = time.perf_counter() - clock
        up = ctx.transport.gather(route(Kind.MASKED, rnd.number, Role.DEVICE, role, senders, number),
                                  Blobs(tuple(uploads)))
        assert isinstance(up.body, Blobs)
        weight_of = dict(zip(senders.tolist(), weights))
        clock = time.perf_counter()  # the aggregator: public context only
        aggregate = pack_aggregate(divisor, scheme.weighted_sum([he.unpack_ciphertexts(b) for b in up.body.blobs],
                                                                [weight_of[int(r)] for r in up.route.senders], public))
        aggregate_s = time.perf_counter() - clock
        decryptor = senders[:1]
        down = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, role, Role.DEVICE, number, decryptor),
                                       Blobs((aggregate,)))
        assert isinstance(down.body, Blobs)
        clock = time.perf_counter()  # the decryptor
        divisor, summed = unpack_aggregate(down.body.blobs[0])
        mean = scheme.decrypt_mean(summed, divisor, ctx.dim).astype(np.float32)
        decrypt_s = time.perf_counter() - clock
        back = ctx.transport.gather(route(Kind.UNMASK, rnd.number, Role.DEVICE, role, decryptor, number),
                                    Blobs((mean.tobytes(),)))
        assert isinstance(back.body, Blobs)
        self.costs.append({"round": rnd.number, "encrypt_s": encrypt_s, "aggregate_s": aggregate_s,
                           "decrypt_s": decrypt_s, "upload_bytes": float(sum(len(b) for b in uploads)),
                           "aggregate_bytes": float(len(aggregate))})
        self.last = {"mass": float(sum(weights))}
        log.info("ckks round %d at %s: encrypt %.3f s (%d devices), aggregate %.3f s, decrypt %.3f s", rnd.number,
                 where, encrypt_s, len(senders), aggregate_s, decrypt_s)
        return torch.from_numpy(np.frombuffer(back.body.blobs[0], dtype=np.float32).copy())

    def report_round(self, round_number: int) -> dict[str, Any]:
        return round_report(self.costs, round_number)

    def report(self) -> dict[str, Any]:
        return run_report(self.costs)

    def state_dict(self) -> dict[str, Any]:
        return {"he_context": self.scheme.secret_context_bytes() if self.scheme is not None else None,
                "contexts": dict(self.contexts), "costs": [dict(c) for c in self.costs],
                "skipped": list(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("he_context") is not None:
            self.scheme = self.he.Ckks(secret_context=state["he_context"])
        self.contexts = dict(state.get("contexts", {}))
        self.costs = [dict(c) for c in state.get("costs", [])]
        self.skipped = [tuple(s) for s in state.get("skipped", [])]


__all__ = ["EncryptedUploads"]
