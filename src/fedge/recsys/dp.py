"""User-level differential privacy for the client-server recommenders (fedmf, fedncf): DP-FedAvg.

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language Models" (ICLR 2018), applied
to the shared part of a recommender: the item table and the dense tensors. User rows never leave the device, so the
only way a user's data reaches what the server releases is its upload. One round:

1. **Poisson sampling**: user u takes part in round t with probability q (`privacy.sample_rate`), from its own
   uniform of stream `recsys-dp-sampling` (keyed by round and user id, so it depends on nothing else); q = 1 means
   everyone. This replaces `train.client_fraction`'s fixed-size sample, which the accountant does not model.
2. **Clipping on the device**, before the upload: the participant's whole upload vector (all its item-row deltas and
   dense deltas, one L2 norm) is scaled by min(1, C / (‖Δ‖ + 1e-6)), the factor of `fedge.core.privacy.clip_rows`
   (Opacus's), C = `privacy.max_grad_norm`.
3. **Noise at the server**: it sums the clipped deltas it received, adds N(0, σ²C²) to *every* coordinate of the
   shared model (the whole catalogue and every dense tensor: noise only where someone uploaded would reveal which
   items were touched) and divides by the *expected* number of participants q·U — McMahan et al.'s fixed-denominator
   estimator f̃_f, whose sensitivity is C / (qU) whoever takes part. It replaces non-private fedmf's per-item
   "average over the clients that touched it": those per-item counts would be released unnoised (one user changes
   them by one) and would divide the noise unevenly. The server optimiser then moves every row, for the same reason.
4. **Adaptive clipping** (Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
   Clipping", NeurIPS 2021): each participant also uploads one centred bit b − ½ (b = 1 if its update norm was at
   most C); the server adds N(0, σ_b²) to their sum (σ_b = `privacy.clipped_count_stddev`, or qU / 20), estimates the
   unclipped fraction b̄ = sum / (qU) + ½ and sets C ← C·exp(−η (b̄ − γ)) (`fedge.core.privacy.adaptive_clip`, γ the
   target quantile). The updates are noised with σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½), so that both releases together cost
   one Gaussian mechanism of noise multiplier σ (a centred bit has sensitivity ½).

Accounting: every round, every user — sampled or not — is subject to one sampled Gaussian mechanism (σ, q), so all
users share one history and the run's ε is each user's (`fedge.privacy.accounting.PrivacyAccountant`).
`privacy.calibrate` picks σ for `train.rounds` rounds and `target_epsilon`; `target_epsilon` also stops a run before
the round that would exceed it. Trust model: central DP — the server sees the clipped updates (and, in `interacted`
mode, which items each user asks for) and is trusted to add the noise; the guarantee covers every model it releases.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fedge.config import ConfigError
from fedge.core.privacy import adaptive_clip, adaptive_noise_multiplier, gaussian_mechanism
from fedge.core.streams import Streams
from fedge.privacy.accounting import PrivacyAccountant, calibrate, epsilon_of
from fedge.privacy.config import PrivacyConfig
from fedge.recsys.wire import Accumulator, Aggregate, ClientRows

BIT = "dp-unclipped"  # the upload slot (after the dense tensors) of a participant's centred bit, adaptive clipping
SAMPLING, NOISE, COUNT = "recsys-dp-sampling", "recsys-dp-noise", "recsys-dp-count"


def finite_or_none(value: float | None) -> float | None:
    """`value`, or None where it is infinite (ε with σ = 0): JSON files are strict."""
    return value if value is None or math.isfinite(value) else None


def upload_norms(uploads: ClientRows) -> torch.Tensor:
    """[B] float64 L2 norm of each client's whole upload vector: its item rows and its dense tensors."""
    b = uploads.num_clients
    squares = torch.zeros(b, dtype=torch.float64)
    squares.index_add_(0, uploads.pair_client, (uploads.item_rows * uploads.item_rows).sum(1).double())
    for tensor in uploads.dense.values():
        flat = tensor.reshape(b, -1)
        squares += (flat * flat).sum(1).double()
    return squares.sqrt()


class UserLevelDP:
    """The mechanism's state across rounds: σ, the clipping norm C (moving with adaptive clipping), the accountant."""

    def __init__(self, cfg: PrivacyConfig, num_users: int, rounds: int, streams: Streams) -> None:
        self.cfg = cfg
        self.num_users = num_users
        self.streams = streams
        self.expected = cfg.sample_rate * num_users  # the fixed denominator q·U
        self.noise_multiplier = (calibrate(cfg.target_epsilon, cfg.delta, cfg.sample_rate, rounds, cfg.accountant)
                                 if cfg.calibrate and cfg.target_epsilon is not None else cfg.noise_multiplier)
        self.max_norm = cfg.max_grad_norm
        self.count_stddev = cfg.clipped_count_stddev if cfg.clipped_count_stddev is not None else self.expected / 20
        self.accountant = PrivacyAccountant(num_users, cfg.delta, cfg.accountant)
        self.clipped_at: float | None = self.max_norm  # C of the last round
        self.update_noise_multiplier = self._update_noise_multiplier()
        target = cfg.target_epsilon
        if target is not None and self.epsilon_after(1) > target:
            raise ConfigError(f"privacy.target_epsilon: {target:g} is exceeded by round 1 already (ε "
                              f"{self.epsilon_after(1):.4g} at σ {self.noise_multiplier:g}, q {cfg.sample_rate:g}); "
                              "raise it or privacy.noise_multiplier, or set privacy.calibrate: true")

    def _update_noise_multiplier(self) -> float:
        """σ_Δ of the updates: σ, or with adaptive clipping the σ_Δ that leaves room for the count's noise."""
        if not self.cfg.adaptive_clipping:
            return self.noise_multiplier
        try:
            return adaptive_noise_multiplier(self.noise_multiplier, self.count_stddev)
        except ValueError:
            raise ConfigError(f"privacy.clipped_count_stddev: {self.count_stddev:g} is too small for noise "
                              f"multiplier {self.noise_multiplier:g} (adaptive clipping needs more than σ/2)") from None

    def participants(self, rnd: int) -> torch.Tensor:
        """The users taking part in round `rnd` (ascending): each with probability q, independently."""
        keys = self.streams.uniform(SAMPLING, rnd, torch.arange(self.num_users), 1)[:, 0]
        return torch.nonzero(keys < self.cfg.sample_rate).flatten()

    def clip(self, uploads: ClientRows) -> ClientRows:
        """What the participants upload: each one's whole vector clipped to C (on the device), and with adaptive
        clipping its centred bit in slot `BIT`. C None (no clipping, σ = 0 only): the uploads, untouched."""
        c = self.max_norm
        if c is None:
            return uploads
        norms = upload_norms(uploads)
        factor = (c / (norms + 1e-6)).clamp(max=1.0).to(uploads.item_rows.dtype)
        dense = {k: v * factor.reshape(-1, *[1] * (v.dim() - 1)) for k, v in uploads.dense.items()}
        if self.cfg.adaptive_clipping:
            dense[BIT] = ((norms <= c).to(torch.float32) - 0.5)[:, None]
        return dataclasses.replace(uploads, item_rows=uploads.item_rows * factor[uploads.pair_client, None],
                                   dense=dense)

    def release(self, shared: dict[str, torch.Tensor], received: Accumulator | None, rnd: int) -> Aggregate:
        """The server's step for round `rnd` from the sums it received (None: nobody took part): noisy sums over
        the whole shared model divided by q·U, every item row counted (moved by the server optimiser); C adapts
        and every user's history gets the round."""
        sums = _sums(shared, received)
        bits = sums.pop(BIT, None)
        self.clipped_at = c = self.max_norm
        std = self.update_noise_multiplier * c if c is not None else 0.0
        generator = self.streams.generator(NOISE, rnd)
        noisy = {}
        for name in shared:  # the item table first, then the dense tensors, in the model's order
            noise = torch.randn(sums[name].shape, generator=generator) if std > 0 else None
            noisy[name] = gaussian_mechanism(sums[name], std, noise) / self.expected
        self._adapt(bits, rnd)
        self.accountant.record(torch.arange(self.num_users), self.noise_multiplier, self.cfg.sample_rate, 1)
        item = noisy.pop("item")
        return Aggregate(item, torch.full((item.shape[0],), self.expected), noisy)

    def _adapt(self, bits: torch.Tensor | None, rnd: int) -> None:
        if not self.cfg.adaptive_clipping or self.max_norm is None:
            return
        total = float(bits.sum()) if bits is not None else 0.0
        if self.noise_multiplier > 0:  # σ = 0 claims no privacy: the count is released as it is
            total += self.count_stddev * float(torch.randn(1, generator=self.streams.generator(COUNT, rnd)))
        unclipped = total / self.expected + 0.5
        self.max_norm = adaptive_clip(self.max_norm, unclipped, self.cfg.target_quantile, self.cfg.clip_learning_rate)

    def epsilon(self) -> float:
        """ε at δ after the recorded rounds: the largest over users (all share one history)."""
        return self.accountant.epsilon()

    def epsilon_after(self, rounds: int) -> float:
        """ε every user would have after `rounds` more rounds."""
        history = [list(step) for step in self.accountant.histories[0]] if self.num_users else []
        if history and history[-1][0] == self.noise_multiplier and history[-1][1] == self.cfg.sample_rate:
            history[-1][2] += rounds
        else:
            history.append([float(self.noise_multiplier), float(self.cfg.sample_rate), rounds])
        return epsilon_of(tuple(tuple(step) for step in history), self.cfg.delta, self.cfg.accountant)

    def stop_reason(self, next_round: int) -> str | None:
        """Why round `next_round` must not run (it would take ε past `target_epsilon`), or None."""
        target = self.cfg.target_epsilon
        if target is None or self.epsilon_after(1) <= target:
            return None
        return (f"privacy.target_epsilon: stopped after round {next_round - 1}: round {next_round} would bring ε to "
                f"{self.epsilon_after(1):.4g} > {target:g} (δ {self.cfg.delta:g})")

    def round_record(self) -> dict[str, Any]:
        """What metrics.jsonl gets each round: ε so far (null: infinite) and the C the round clipped to."""
        return {"epsilon": finite_or_none(self.epsilon()), "max_grad_norm": self.clipped_at}

    def summary(self) -> dict[str, Any]:
        """What summary.json gets: ε, δ, σ (accounted) and σ_Δ (applied), the final C, the accountant."""
        return {"privacy_mechanism": "user", "epsilon": finite_or_none(self.epsilon()), "delta": self.cfg.delta,
                "noise_multiplier": self.noise_multiplier, "update_noise_multiplier": self.update_noise_multiplier,
                "max_grad_norm": self.max_norm, "sample_rate": self.cfg.sample_rate,
                "accountant": self.cfg.accountant,
                "epsilon_scope": "every user: all users are subject to the same mechanism every round"}

    def state_dict(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "max_norm": self.max_norm, "clipped_at": self.clipped_at,
                "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise_multiplier = float(state["noise_multiplier"])
        self.max_norm, self.clipped_at = state["max_norm"], state["clipped_at"]
        self.accountant.load_state_dict(state["accountant"])
        self.update_noise_multiplier = self._update_noise_multiplier()


def _sums(shared: dict[str, torch.Tensor], received: Accumulator | None) -> dict[str, torch.Tensor]:
    """The received sums by name, shaped like `shared` (zeros if nobody took part), the bits' sum under `BIT`."""
    if received is None:
        return {name: torch.zeros_like(tensor) for name, tensor in shared.items()}
    out, offset = {"item": received.item_sum}, 0
    for name, shape in received.shapes.items():
        size = int(torch.Size(shape).numel())
        out[name] = received.dense_sum[0, offset: offset + size].reshape(shape)
        offset += size
    return out


__all__ = ["BIT", "UserLevelDP", "finite_or_none", "upload_norms"]
