"""The user-level and peer mechanisms as transforms of what devices release (docs/privacy.md).

* `UserLevel` — DP-FedAvg / DP-HFL (McMahan et al., ICLR 2018): a device clips its model update to norm C before it
  uploads it; the aggregator adds N(0, (σ·C·w_max)²) to the weighted sum of the updates it received (w_max the
  largest aggregation weight in the population it samples from: one device changes the sum by at most w_max·C) and
  divides by the expected total weight q·W (a fixed denominator, McMahan et al.'s f̃_f). With adaptive clipping
  (Andrew et al., NeurIPS 2021) each device also reports whether its update was within C, the aggregator releases a
  noisy count of those, and C moves towards the `target_quantile` of the update norms; the update noise then uses
  σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2), so that the two releases together cost what σ alone would.
* `PeerRelease` — for decentralized algorithms: whatever a device sends its peers (its model, its similarity
  sketch) is x0 ∘ m + clip(update, C) + N(0, σ²C²) on the kept coordinates, drawn once per device, kind and round
  and sent to every receiver alike; every release is one Gaussian mechanism (sampling rate 1) in the device's
  history, so its guarantee rests on no neighbour.

With σ = 0 and no clipping both are the identity, bit for bit (nothing is added, nothing is rebuilt).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedge.core.privacy import adaptive_clip, adaptive_noise_multiplier, clip_rows, gaussian_mechanism
from fedge.core.streams import Streams
from fedge.privacy.accounting import PrivacyAccountant
from fedge.privacy.config import PrivacyConfig


def _normal(generator: torch.Generator, size: int) -> torch.Tensor:
    return torch.normal(0.0, 1.0, size=(size,), generator=generator)


class UserLevel:
    """Clipping at the device and noise at the aggregator; `noise_multiplier` is σ after any calibration."""

    def __init__(self, cfg: PrivacyConfig, noise_multiplier: float) -> None:
        self.cfg = cfg
        self.noise_multiplier = noise_multiplier
        self.max_norm = cfg.max_grad_norm  # moves with adaptive clipping
        self.population = 1  # devices the aggregator sampled from in the last round (sets the count noise)

    @property
    def update_noise_multiplier(self) -> float:
        """σ for the updates: σ itself, or σ_Δ when the unclipped count is released too."""
        if not self.cfg.adaptive_clipping or self.noise_multiplier == 0:
            return self.noise_multiplier
        return adaptive_noise_multiplier(self.noise_multiplier, self._count_stddev)

    def expected_count(self, population: int) -> float:
        return self.cfg.sample_rate * population

    def observe_population(self, population: int) -> None:
        """The number of devices the aggregator samples from this round (sets the expected count)."""
        self.population = population

    def clip(self, updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(updates clipped to C, [P] 1.0 where an update was within C): what each device uploads."""
        clipped, norms = clip_rows(updates, self.max_norm)
        within = (norms <= self.max_norm).to(updates.dtype) if self.max_norm is not None else torch.ones(len(norms))
        return clipped, within

    def noisy_sum(self, weighted_sum: torch.Tensor, max_weight: float, generator: torch.Generator) -> torch.Tensor:
        """The weighted sum of clipped updates plus N(0, (σ_Δ·C·w_max)²) per coordinate."""
        if self.max_norm is None:
            return weighted_sum
        std = self.update_noise_multiplier * self.max_norm * max_weight
        noise = _normal(generator, weighted_sum.numel()) if std > 0 else None
        return gaussian_mechanism(weighted_sum, std, noise)

    def adapt(self, within: torch.Tensor, population: int, generator: torch.Generator) -> None:
        """Adaptive clipping: move C from the noisy fraction of updates that were within it."""
        if not self.cfg.adaptive_clipping or self.max_norm is None:
            return
        # Centred bits (b − ½): the count then has sensitivity ½, as the σ_Δ formula assumes (Andrew et al. 2021).
        centred = float((within - 0.5).sum())
        noisy = centred + float(torch.normal(0.0, self._count_stddev, size=(1,), generator=generator))
        fraction = noisy / max(self.expected_count(population), 1e-12) + 0.5
        self.max_norm = adaptive_clip(self.max_norm, fraction, self.cfg.target_quantile, self.cfg.clip_learning_rate)

    @property
    def _count_stddev(self) -> float:
        """σ_b: as configured, else the larger of Andrew et al.'s expected / 20 and σ (which keeps σ_Δ within
        1.16 σ; σ_b must exceed σ / 2 for σ_Δ to exist)."""
        if self.cfg.clipped_count_stddev is not None:
            return self.cfg.clipped_count_stddev
        return max(self.expected_count(self.population) / 20.0, self.noise_multiplier, 1e-6)

    def state_dict(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "population": self.population}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.max_norm, self.population = state["max_norm"], int(state["population"])


class PeerRelease:
    """What a device releases to its peers under the peer mechanism: one noisy copy per device, kind and round."""

    def __init__(self, cfg: PrivacyConfig, noise_multiplier: float, streams: Streams,
                 accountant: PrivacyAccountant | None = None, rows: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> None:
        self.cfg, self.noise_multiplier, self.streams = cfg, noise_multiplier, streams
        self.accountant, self.rows = accountant, rows  # `rows` maps device ids to the accountant's rows

    @property
    def identity(self) -> bool:
        return self.noise_multiplier == 0 and self.cfg.max_grad_norm is None

    def release(self, kind: str, round_number: int, ids: torch.Tensor, base: torch.Tensor, values: torch.Tensor,
                masks: torch.Tensor) -> torch.Tensor:
        """[M, w] released vectors of devices `ids`: base + clip(values − base, C) + noise on the kept coordinates.

        `base` is what receivers know without the device's data (x0 ∘ m for models, 0 for updates); each device's
        noise comes from its own "dp-<kind>" stream of the round.
        """
        if self.accountant is not None and len(ids):
            self.accountant.record(self.rows(ids) if self.rows is not None else ids, self.noise_multiplier, 1.0)
        if self.identity:
            return values
        update, _ = clip_rows((values - base) * masks, self.cfg.max_grad_norm)
        std = self.noise_multiplier * (self.cfg.max_grad_norm or 0.0)
        if std > 0:
            noise = torch.stack([_normal(self.streams.generator(f"dp-{kind}", int(i), round_number), values.shape[1])
                                 for i in ids.tolist()]) if len(ids) else torch.zeros_like(values)
            update = update + std * noise
        return torch.where(masks, base + update, torch.zeros((), dtype=values.dtype))




def user_level(cfg: PrivacyConfig) -> UserLevel | None:
    """The user-level mechanism of this config (σ as configured: the runtime calibrates it first), or None."""
    return UserLevel(cfg, cfg.noise_multiplier) if cfg.mechanism == "user" else None


__all__ = ["PeerRelease", "UserLevel", "user_level"]
