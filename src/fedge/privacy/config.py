"""The `privacy:` section of `fedge run` and `fedge recsys` (docs/privacy.md). Off by default.

Three mechanisms, each a transform of what a device releases:

* `dp-sgd` — record-level DP-SGD on every device (Abadi et al. 2016): each local step Poisson-samples the device's
  training samples at rate q_i = batch_size / n_i, clips every per-sample gradient to `max_grad_norm` C and adds
  N(0, σ²C²) to the sum (pruned coordinates get no noise and stay zero);
* `user` — user-level DP-FedAvg / DP-HFL (McMahan et al. 2018): each online device takes part with probability
  `sample_rate` q (Poisson), clips its model update to C and uploads it; the aggregator adds N(0, σ²C²) to the sum
  and divides by the expected number of participants; optional adaptive clipping (Andrew et al. 2021);
* `peer` — decentralized algorithms (dfl, dpmn and its variants): every device clips and noises whatever it sends
  (its model for its neighbours, its similarity sketch for probes: each release is one Gaussian mechanism), so its
  guarantee does not rest on trusting any neighbour.

σ is `noise_multiplier`, or, with `calibrate: true`, the smallest σ that keeps ε at or below `target_epsilon`
after the planned rounds. `target_epsilon` without `calibrate` stops the run before the round that would exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedge.config import NonNegativeFloat, PositiveFloat, Probability, Range, Share, check

Delta = Annotated[float, Range(0, 1, low_open=True, high_open=True)]


@dataclass
class PrivacyConfig:
    mechanism: Literal["none", "dp-sgd", "user", "peer"] = "none"
    noise_multiplier: NonNegativeFloat = 1.0  # σ
    max_grad_norm: PositiveFloat | None = 1.0  # C; null: no clipping (C = ∞; only with σ = 0)
    delta: Delta = 1e-5
    sample_rate: Share = 1.0  # user: the Poisson rate q at which online devices take part
    accountant: Literal["rdp", "prv"] = "rdp"
    target_epsilon: PositiveFloat | None = None
    calibrate: bool = False  # choose σ to reach target_epsilon after the planned rounds
    adaptive_clipping: bool = False  # user: move C towards the target quantile of the update norms
    target_quantile: Probability = 0.5
    clip_learning_rate: PositiveFloat = 0.2
    clipped_count_stddev: PositiveFloat | None = None  # noise on the count of unclipped updates; null: expected / 20

    def validate(self) -> None:
        check(not (self.calibrate and self.target_epsilon is None),
              "privacy.calibrate: needs privacy.target_epsilon (the ε to calibrate σ for)")
        check(self.max_grad_norm is not None or (self.noise_multiplier == 0 and not self.calibrate),
              "privacy.max_grad_norm: null (no clipping) leaves the sensitivity unbounded; only σ = 0 allows it")
        check(not (self.adaptive_clipping and self.mechanism != "user"),
              f"privacy.adaptive_clipping: only for mechanism user, not {self.mechanism}")
        check(not (self.adaptive_clipping and self.max_grad_norm is None),
              "privacy.adaptive_clipping: needs an initial privacy.max_grad_norm")

    @property
    def enabled(self) -> bool:
        return self.mechanism != "none"


__all__ = ["PrivacyConfig"]
