"""Secure aggregation of fedmf / fedncf uploads (`secure.aggregation: secagg | secagg+`; docs/recsys.md, "Secure
aggregation"): the server learns, per item, the sum of the round's deltas and how many clients touched it — fedmf's
per-item average — and never one client's deltas or which items it touched.

Each client's input is one **whole-catalogue** vector (a sparse upload would reveal which items it touched):

    [ item deltas, I × d_i (zeros where untouched) | one touched indicator per item, I | dense deltas ]

The deltas are clipped per coordinate to [−clip, clip] and quantized to `value_bits`-bit integers
(`fedge.secure.quantize`); the indicators are the integers 0 / 1. The vectors are summed in Z_{2^bits} by one round
of SecAgg / SecAgg+ over the run's transport (`fedge.secure.secagg.secure_sum`: every key, share, masked vector and
unmasking message is a `Blobs` message counted in the ledger; simulated dropouts from `secure.dropout`), with the
headroom for the round's number of summands checked. The server reads each item's count c_i exactly, removes the
(m − c_i) known codes of the untouched zeros (m the summed clients) and dequantizes the touched clients' sum, so
each item's mean is within half a quantization step of the plaintext per-item mean (unclipped deltas); dense
tensors are averaged over the m summed clients, as in plaintext. A round that cannot complete (too few clients left
in a neighbourhood) is skipped: the model stays, the reason is logged and kept in `aborted`.

With user-level DP (`privacy.mechanism: user`, `fedge.recsys.dp`) the noise is distributed and added *before*
masking: each participant, its upload already clipped to C (L2) on the device, adds N(0, σ_Δ²C²/t) to every
coordinate of its item and dense deltas (t the round's threshold; a completed round sums at least t clients, so the
sum carries at least the server-side mechanism's noise) and uploads no indicators (DP's release divides by q·U and
must not release per-item counts). The accountant records the same (σ, q) every round, so ε is unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from fedge.config import ConfigError
from fedge.core.streams import generator
from fedge.messaging import Role, Transport
from fedge.recsys.config import RecsysConfig
from fedge.recsys.dp import UserLevelDP
from fedge.recsys.wire import Aggregate, ClientRows
from fedge.secure.config import SecureConfig
from fedge.secure.quantize import check_headroom, dequantize_sum, quantize, step

log = logging.getLogger(__name__)
NOISE = "recsys-dp-secure-noise"  # a participant's share of the DP noise, keyed by (user, round)


class CatalogueVectors(Mapping[int, np.ndarray]):
    """{user id: its whole-catalogue input}, each built only when the protocol reads it (one at a time: the
    catalogue times all clients is never held as integers at once)."""

    def __init__(self, uploads: ClientRows, cfg: SecureConfig, indicators: bool, noise_std: float = 0.0,
                 seed: int = 0, rnd: int = 0) -> None:
        assert uploads.users is not None, "uploads name the users that send them"
        self.uploads, self.cfg, self.indicators = uploads, cfg, indicators
        self.noise_std, self.seed, self.rnd = noise_std, seed, rnd
        self.index = {int(u): b for b, u in enumerate(uploads.users.tolist())}

    def __getitem__(self, user: int) -> np.ndarray:
        rows, b = self.uploads, self.index[user]
        a, z = int(rows.ptr[b]), int(rows.ptr[b + 1])
        items = rows.num_items * rows.item_dim
        flat = torch.zeros(items + rows.dense_width(), dtype=torch.float64)
        flat[:items].view(rows.num_items, rows.item_dim)[rows.pair_item[a:z]] = rows.item_rows[a:z].double()
        if rows.dense:
            flat[items:] = torch.cat([t[b].reshape(-1) for t in rows.dense.values()]).double()
        if self.noise_std > 0:
            flat += self.noise_std * torch.randn(len(flat), dtype=torch.float64,
                                                 generator=generator(self.seed, NOISE, user, self.rnd))
        quantized = quantize(flat, self.cfg.clip, self.cfg.value_bits)
        if not self.indicators:
            return quantized
        touched = np.zeros(rows.num_items, dtype=np.uint64)
        touched[rows.pair_item[a:z].numpy()] = 1
        return np.concatenate([quantized[:items], touched, quantized[items:]])

    def __iter__(self) -> Iterator[int]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def decode(total: np.ndarray, summed: int, num_items: int, item_dim: int, dense_shapes: Mapping[str, torch.Size],
           cfg: SecureConfig, indicators: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The float sums the server unmasked: (item sums [I, d_i] over the touching clients, counts [I] (None without
    indicators), dense sums by name), from the integer total of `summed` clients' `CatalogueVectors`."""
    items = num_items * item_dim
    mask = np.uint64((1 << cfg.bits) - 1)
    item_q = total[:items].reshape(num_items, item_dim)
    rest = total[items + num_items:] if indicators else total[items:]
    if indicators:
        count = total[items:items + num_items]
        if np.any(count > summed):
            raise ValueError(f"an item count above the {summed} summed clients: the unmasked sum is corrupt")
        zero = np.uint64(quantize(torch.zeros(1), cfg.clip, cfg.value_bits)[0])  # the code of an untouched zero
        touched_q = (item_q - (np.uint64(summed) - count)[:, None] * zero) & mask  # the touching clients' codes
        counts = torch.from_numpy(count.astype(np.float64))
        item_sum = torch.from_numpy(touched_q.astype(np.float64)) * step(cfg.clip, cfg.value_bits)
        item_sum = item_sum - counts[:, None] * cfg.clip
    else:
        counts = None
        item_sum = dequantize_sum(item_q.reshape(-1), summed, cfg.clip, cfg.value_bits).reshape(num_items, item_dim)
    flat = dequantize_sum(rest, summed, cfg.clip, cfg.value_bits)
    dense, offset = {}, 0
    for name, shape in dense_shapes.items():
        size = int(torch.Size(shape).numel())
        dense[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return item_sum, counts, dense


def nothing(shared: dict[str, torch.Tensor]) -> Aggregate:
    """The aggregate of a round that released nothing (aborted): no item counted, zero dense steps."""
    item = shared["item"]
    return Aggregate(torch.zeros_like(item), torch.zeros(item.shape[0]),
                     {k: torch.zeros_like(v) for k, v in shared.items() if k != "item"})


class SecureCatalogue:
    """One SecAgg(+) round per fedmf round over whole-catalogue vectors, and the server's per-item means."""

    def __init__(self, cfg: SecureConfig, seed: int, transport: Transport, participants: int,
                 privacy: UserLevelDP | None = None) -> None:
        try:
            from fedge.secure import secagg
        except ImportError as err:
            raise ConfigError(f"secure.aggregation: {cfg.aggregation} needs the secure extra "
                              f"(pip install 'fedge[secure]'): {err}") from None
        self.secagg, self.cfg, self.seed, self.transport, self.privacy = secagg, cfg, seed, transport, privacy
        threshold, neighbourhood = cfg.threshold_for(participants), cfg.neighbourhood(participants)
        if threshold > neighbourhood:
            setting = (f"secure.threshold: {cfg.threshold}" if cfg.threshold is not None
                       else f"train.client_fraction: {participants} client(s) per round")
            raise ConfigError(f"{setting}: a threshold of t={threshold} needs at least t neighbours per client, "
                              f"a round of {participants} client(s) gives {neighbourhood}")
        check_headroom(participants, cfg.value_bits, cfg.bits)
        self.aborted: list[int] = []  # rounds skipped because the sum could not be recovered
        self.last: dict[str, Any] = {}  # the last round's survivors per stage and compute seconds

    def aggregate(self, uploads: ClientRows | None, rnd: int, aggregator: tuple[Role, int] = (Role.SERVER, 0)
                  ) -> Aggregate | None:
        """The aggregator's averages from the masked uploads of `uploads.users` (fedmf's per-item means; under DP
        the noisy sums over q·U), or None when the round released nothing (aborted, or nobody sampled under DP:
        every user's history still gets the round)."""
        cfg, secagg, privacy = self.cfg, self.secagg, self.privacy
        if privacy is not None:
            privacy.clipped_at = privacy.max_norm
            privacy.accountant.record(torch.arange(privacy.num_users), privacy.noise_multiplier,
                                      privacy.cfg.sample_rate, 1)
        if uploads is None:
            return None
        users = uploads.users
        assert users is not None, "uploads name the users that send them"
        threshold = cfg.threshold_for(len(users))
        check_headroom(len(users), cfg.value_bits, cfg.bits)
        noise_std = 0.0
        if privacy is not None and privacy.max_norm is not None:
            noise_std = privacy.update_noise_multiplier * privacy.max_norm / math.sqrt(threshold)
        inputs = CatalogueVectors(uploads, cfg, privacy is None, noise_std, self.seed, rnd)
        settings = secagg.SecAggSettings(threshold=threshold,
                                         neighbours=None if cfg.aggregation == "secagg" else cfg.neighbours,
                                         bits=cfg.bits, key_source=cfg.key_source)
        try:
            result = secagg.secure_sum(inputs, settings, rnd, self.seed, self.transport, {u: u for u in inputs},
                                       secagg.simulated_dropouts(self.seed, cfg.dropout, rnd, users), aggregator)
        except secagg.SecAggAborted as err:
            log.warning("%s; the model is not updated this round", err)
            self.aborted.append(rnd)
            self.last = {"aborted": str(err)}
            return None
        self.last = {"survivors": {k: len(v) for k, v in result.survivors.items()}, "seconds": result.seconds}
        summed = len(result.summed)
        shapes = {k: v.shape[1:] for k, v in uploads.dense.items()}
        item_sum, counts, dense = decode(result.total, summed, uploads.num_items, uploads.item_dim, shapes, cfg,
                                         indicators=privacy is None)
        if privacy is not None:  # the noise is in the sum already: divide by q·U, as the server-side release does
            expected = privacy.expected
            return Aggregate((item_sum / expected).float(), torch.full((uploads.num_items,), expected),
                             {k: (v / expected).float() for k, v in dense.items()})
        assert counts is not None
        mean = torch.where(counts[:, None] > 0, item_sum / counts.clamp_min(1)[:, None], torch.zeros_like(item_sum))
        return Aggregate(mean.float(), counts.float(), {k: (v / summed).float() for k, v in dense.items()})


def secure_uploads(cfg: RecsysConfig, num_users: int, transport: Transport, privacy: UserLevelDP | None,
                   distributed: bool = False) -> SecureCatalogue | None:
    """The run's secure aggregation, or None when `secure.aggregation` does not mask (`none`). `distributed`: a
    run over many processes, refused (`secure_sum` plays every client's side in one process)."""
    if not cfg.secure.masking:
        return None
    if distributed:
        raise ConfigError(f"secure.aggregation: {cfg.secure.aggregation} is not wired for a distributed fedge recsys "
                          "run yet (each process would play only its own clients' side of the protocol)")
    participants = num_users if privacy is not None else max(1, round(cfg.train.client_fraction * num_users))
    return SecureCatalogue(cfg.secure, cfg.seed, transport, participants, privacy)


__all__ = ["CatalogueVectors", "SecureCatalogue", "decode", "nothing", "secure_uploads"]
