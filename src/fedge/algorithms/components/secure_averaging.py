"""FedAvg's uploads under secure aggregation (`secure.aggregation: secagg | secagg+`, docs/secure.md): the server
learns the weighted sum of the updates of the devices that finished the round, never one device's update.

Each participant u scales its update by w_u / w_max (w the aggregation weights, which the server knows: data sizes
or 1; w_max the largest among this round's participants, or, under user-level DP, in the population sampled from),
clips it coordinate-wise to [−clip, clip], quantizes it and takes part in one round of SecAgg(+) over the message
layer (`fedge.secure.secagg`). The server dequantizes the sum, multiplies by w_max and divides by the summed
devices' weight mass, so the step is FedAvg's Σ w_u Δ_u / Σ w_u up to quantization.

With user-level DP (privacy.mechanism: user) the noise is distributed: each device clips its update to C (L2) and
adds N(0, σ²C²/t) to its scaled update *before* quantizing and masking, t the threshold. A completed round sums at
least t devices (the server needs t unmasking shares), so the sum carries noise of variance at least σ²C²·w_max² —
what the server-side mechanism adds — and the accountant's record (σ, q) and ε are unchanged. Caveats, stated in
docs/secure.md: the noise is continuous and then quantized and coordinate-clipped, not the distributed discrete
Gaussian of Kairouz et al. (ICML 2021); adaptive clipping is refused with secure aggregation.

A round that cannot complete (too few devices left in a neighbourhood) is skipped: the model stays, the reason is
logged and the round number kept in `aborted`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from fedge.algorithms.context import Round, RunContext
from fedge.config import ConfigError
from fedge.messaging import Role
from fedge.privacy.mechanisms import UserLevel
from fedge.secure.config import SecureConfig
from fedge.secure.quantize import check_headroom, dequantize_sum, quantize

log = logging.getLogger(__name__)


def _weights(weighting: str, data_sizes: torch.Tensor) -> torch.Tensor:
    return data_sizes.to(torch.float64) if weighting == "data_size" else torch.ones(len(data_sizes),
                                                                                      dtype=torch.float64)


class SecureUploads:
    """Masked uploads and their unmasked sum, one SecAgg(+) round per FedAvg round."""

    def __init__(self, cfg: SecureConfig, weighting: str) -> None:
        try:
            from fedge.secure import secagg
        except ImportError as err:
            raise ConfigError(f"secure.aggregation: {cfg.aggregation} needs the secure extra "
                              f"(pip install 'fedge[secure]'): {err}") from None
        self.secagg = secagg
        self.cfg, self.weighting = cfg, weighting
        self.aborted: list[int] = []  # rounds skipped because the sum could not be recovered
        self.last: dict[str, Any] = {}  # the last round's survivors per stage and compute seconds

    def _dropouts(self, ctx: RunContext, rnd: Round, ids: torch.Tensor) -> dict[Any, list[int]]:
        """Simulated mid-protocol dropouts (stream `secagg-dropout`; `fedge.secure.secagg.simulated_dropouts`)."""
        return self.secagg.simulated_dropouts(ctx.streams.seed, self.cfg.dropout, rnd.number, ids)

    def step(self, ctx: RunContext, rnd: Round, senders: torch.Tensor, updates: torch.Tensor, dp: UserLevel | None,
             population: torch.Tensor, aggregator: tuple[Role, int] = (Role.SERVER, 0)) -> torch.Tensor | None:
        """The step to add to the aggregator's model from the updates [P, d] of `senders` (rows, in id order), or
        None when the round was aborted. `aggregator`: the server, or (Role.EDGE, k) for hfl's edge server k;
        `population`: the devices it sampled from. `last["mass"]` is then the summed devices' weight mass."""
        cfg = self.cfg
        ids = ctx.ids[senders]
        weights = _weights(self.weighting, ctx.data_sizes[senders])
        threshold = cfg.threshold_for(len(senders))
        check_headroom(len(senders), cfg.value_bits, cfg.bits)
        if dp is not None:
            pool = _weights(self.weighting, ctx.data_sizes[ctx.by_id(torch.nonzero(population).flatten())])
            w_max = float(pool.max())
            updates, _ = dp.clip(updates)
        else:
            w_max = float(weights.max())
        scaled = updates.to(torch.float64) * (weights / w_max)[:, None]
        if dp is not None and dp.max_norm is not None and dp.update_noise_multiplier > 0:
            std = dp.update_noise_multiplier * dp.max_norm / math.sqrt(threshold)
            noise = torch.stack([torch.normal(0.0, 1.0, size=(updates.shape[1],), dtype=torch.float64,
                                              generator=ctx.streams.generator("dp-secure-noise", int(i), rnd.number))
                                 for i in ids.tolist()])
            scaled = scaled + std * noise
        quantized = quantize(scaled, cfg.clip, cfg.value_bits)
        settings = self.secagg.SecAggSettings(threshold=threshold,
                                              neighbours=None if cfg.aggregation == "secagg" else cfg.neighbours,
                                              bits=cfg.bits, key_source=cfg.key_source)
        inputs = {int(i): quantized[p] for p, i in enumerate(ids.tolist())}
        row_of = {int(i): int(r) for i, r in zip(ids.tolist(), senders.tolist())}
        try:
            result = self.secagg.secure_sum(inputs, settings, rnd.number, ctx.streams.seed, ctx.transport, row_of,
                                            self._dropouts(ctx, rnd, ids), aggregator)
        except self.secagg.SecAggAborted as err:
            log.warning("%s; the model is not updated this round", err)
            self.aborted.append(rnd.number)
            self.last = {"aborted": str(err)}
            return None
        summed = torch.tensor([row_of[u] for u in result.summed], dtype=torch.long)
        mass = float(_weights(self.weighting, ctx.data_sizes[summed]).sum())
        self.last = {"survivors": {k: len(v) for k, v in result.survivors.items()}, "seconds": result.seconds,
                     "mass": mass}
        total = dequantize_sum(result.total, len(result.summed), cfg.clip, cfg.value_bits) * w_max
        if dp is not None:
            return (total / (dp.cfg.sample_rate * float(pool.sum()))).to(torch.float32)
        return (total / mass).to(torch.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"aborted": list(self.aborted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.aborted = list(state.get("aborted", []))


__all__ = ["SecureUploads"]
