"""Differential privacy in `fedge run`: calibration, the mechanism each algorithm may use, accounting per round.

`prepare_privacy` turns the `privacy:` section into what a run needs: σ (given, or calibrated so that ε reaches
`privacy.target_epsilon` after the planned rounds), a per-device accountant, DP-SGD settings for the trainer or the
peer mechanism's release transform, and the honest note of anything the accountant does not cover. Before every
round `would_exceed` says whether the round could take a device past `target_epsilon` (the run then stops).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ServerAveraging
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.context import RunContext
from fedge.config import ConfigError
from fedge.experiment import ExperimentConfig
from fedge.privacy.accounting import PrivacyAccountant, calibrate, epsilon_of
from fedge.privacy.mechanisms import PeerRelease, UserLevel
from fedge.runtimes.batches import dp_sgd_schedule
from fedge.runtimes.dp_sgd import DPSGD


@dataclass
class PrivacyRun:
    """What a DP run carries: the effective settings, the accountant and the mechanism's runtime parts."""

    mechanism: str
    noise_multiplier: float  # σ as used (calibrated or configured)
    accountant: PrivacyAccountant
    dp_sgd: DPSGD | None = None
    dp_schedule: tuple[torch.Tensor, torch.Tensor] | None = None  # DP-SGD's [N] sampling rates and steps a round
    per_round: list[tuple[torch.Tensor, float, torch.Tensor | float, torch.Tensor | int]] = field(
        default_factory=list)  # the worst case one round adds: (rows, σ, q, steps)
    stopped: str | None = None  # why the run stopped at the target ε
    user_level: UserLevel | None = None  # the aggregator's mechanism (its C moves with adaptive clipping)

    def would_exceed(self, target: float | None) -> bool:
        """Whether the next round could take some device past `target` (worst case: everyone is subject)."""
        if target is None:
            return False
        trial = copy.deepcopy(self.accountant)
        for rows, sigma, rate, steps in self.per_round:
            trial.record(rows, sigma, rate, steps)
        return trial.epsilon() > target

    def summary(self, ctx: RunContext, dp_config: Any) -> dict[str, Any]:
        """The summary's `privacy` block: ε per device (by device id) and overall, or why there is none."""
        note = self.accountant.assumption_broken
        by_id = ctx.rows_of(torch.arange(ctx.num_devices))
        epsilons = self.accountant.epsilons()
        return {"mechanism": self.mechanism, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.user_level.max_norm if self.user_level else dp_config.max_grad_norm,
                "delta": self.accountant.delta,
                "accountant": self.accountant.kind, "sample_rate": dp_config.sample_rate,
                "epsilon": None if note else self.accountant.epsilon(),
                "epsilon_by_device": None if note else [epsilons[int(r)] for r in by_id],
                "not_covered": note, "stopped_at_target": self.stopped}


def _check(config: ExperimentConfig, algorithm: Algorithm) -> None:
    """One-line errors for a mechanism the algorithm cannot use."""
    mechanism, name = config.privacy.mechanism, algorithm.name
    if mechanism == "user" and not isinstance(algorithm.combiner, (ServerAveraging, EdgeCloudAveraging)):
        raise ConfigError(f"privacy.mechanism: user needs a client-server algorithm (fedavg, hfl), not {name}")
    if mechanism == "user" and config.server.sample_fraction < 1:
        raise ConfigError("server.sample_fraction: under privacy.mechanism user devices are sampled with "
                          "privacy.sample_rate (Poisson); leave server.sample_fraction at 1")
    if config.privacy.adaptive_clipping and name != "fedavg":
        raise ConfigError(f"privacy.adaptive_clipping: implemented for fedavg's one server, not {name}")
    if mechanism == "peer" and algorithm.selector is None:
        raise ConfigError(f"privacy.mechanism: peer protects what devices send their peers; {name} sends nothing "
                          "to peers (use user for fedavg and hfl, dp-sgd for any algorithm)")


def _uncovered(config: ExperimentConfig, algorithm: Algorithm) -> str | None:
    """What this run releases outside the mechanism (the accountant's ε would not hold), if anything."""
    mechanism = config.privacy.mechanism
    if mechanism == "peer" and algorithm.pruner is not None:
        return (f"{algorithm.name}'s pruning masks are computed from the device's data and sent without noise; "
                "the accountant covers the noisy values only")
    if mechanism == "dp-sgd" and algorithm.pruner is not None and config.pruning.tolerance < 1:
        return ("the pruning schedule reads each device's validation accuracy (pause/back-off) without noise; set "
                "pruning.tolerance >= 1 for a schedule that does not depend on the data")
    if mechanism == "user" and algorithm.name == "hfl" and config.hierarchy.clustering == "similarity":
        return "hfl's similarity clustering uploads every device's update once without clipping or noise"
    return None


def prepare_privacy(config: ExperimentConfig, algorithm_name: str, data_sizes: torch.Tensor,
                    build: Any) -> tuple[ExperimentConfig, Algorithm, PrivacyRun | None]:
    """(the effective config with σ calibrated, the algorithm built from it, the privacy run or None).

    `build(config) -> Algorithm`; `data_sizes` [N] per row (DP-SGD's sampling rates)."""
    if not config.privacy.enabled:
        return config, build(config), None
    dp = config.privacy
    n, rounds = config.data.devices, config.rounds
    rows = torch.arange(n)
    probe_algorithm = build(config)
    _check(config, probe_algorithm)
    releases = 2 if probe_algorithm.selector is not None and probe_algorithm.selector.probes else 1
    if dp.mechanism == "dp-sgd":
        rates, steps = dp_sgd_schedule(data_sizes.tolist(), config.train.epochs, config.train.batch_size)
        worst = int(torch.argmax(rates))
        calibration = (float(rates[worst]), int(steps[worst]) * rounds)
    elif dp.mechanism == "user":
        calibration = (dp.sample_rate, rounds)
    else:
        calibration = (1.0, releases * rounds)
    sigma = dp.noise_multiplier
    if dp.calibrate:
        assert dp.target_epsilon is not None
        sigma = calibrate(dp.target_epsilon, dp.delta, calibration[0], calibration[1], dp.accountant)
    effective = copy.deepcopy(config)
    effective.privacy.noise_multiplier, effective.privacy.calibrate = sigma, False
    algorithm = build(effective)
    accountant = PrivacyAccountant(n, dp.delta, dp.accountant)
    run = PrivacyRun(dp.mechanism, sigma, accountant)
    if isinstance(algorithm.combiner, (ServerAveraging, EdgeCloudAveraging)):
        run.user_level = algorithm.combiner.dp
    note = _uncovered(config, algorithm)
    if note:
        accountant.note(note)
    if dp.mechanism == "dp-sgd":
        run.dp_sgd, run.dp_schedule = DPSGD(sigma, dp.max_grad_norm), (rates, steps)
        run.per_round.append((rows, sigma, rates, steps))
    elif dp.mechanism == "user":
        run.per_round.append((rows, sigma, dp.sample_rate, 1))
    else:
        run.per_round.append((rows, sigma, 1.0, releases))
    if dp.target_epsilon is not None and not dp.calibrate and run.would_exceed(dp.target_epsilon):
        first = epsilon_of(((sigma, calibration[0], calibration[1] // rounds),), dp.delta, dp.accountant)
        raise ConfigError(f"privacy.target_epsilon: {dp.target_epsilon} is exceeded by the first round (ε = "
                          f"{first:.3g} with σ = {sigma:g}); raise σ or the target, or set privacy.calibrate")
    return effective, algorithm, run


def peer_release(run: PrivacyRun | None, config: ExperimentConfig, ctx: RunContext) -> PeerRelease | None:
    if run is None or run.mechanism != "peer":
        return None
    return PeerRelease(config.privacy, run.noise_multiplier, ctx.streams, run.accountant, ctx.rows_of)


__all__ = ["PrivacyRun", "peer_release", "prepare_privacy"]
