"""Privacy accounting per device, with Opacus's accountants (the optional extra `fedge[privacy]`).

Every device has its own history of Gaussian mechanisms it was subject to: (noise multiplier σ, sampling rate q,
number of steps), as Opacus's `IAccountant.history` holds them. A device's ε at the configured δ is what Opacus's
RDP accountant (Mironov 2017; Mironov, Talwar and Zhang 2019) or PRV accountant (Gopi, Lee and Wutschitz 2021)
computes from that history; the run's ε is the largest over devices. Histories are kept compressed (consecutive
identical mechanisms merged) and ε is cached per distinct history, so a thousand devices with the same history
cost one computation.

The accountants assume what they are told: Poisson sampling with rate q of the records (DP-SGD) or devices
(user-level), independent Gaussian noise of standard deviation σ times the sensitivity. Where a run does not do
that, the summary says so instead of printing a number (`PrivacyAccountant.assumption_broken`).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import torch

from fedge.config import ConfigError

History = tuple[tuple[float, float, int], ...]  # ((σ, q, steps), ...)


def require_opacus() -> Any:
    """The `opacus.accountants` module, or a one-line ConfigError saying how to install it."""
    try:
        import opacus.accountants as accountants
    except ImportError:
        raise ConfigError("privacy: needs Opacus's accountants: pip install 'fedge[privacy]'") from None
    return accountants


@lru_cache(maxsize=4096)
def epsilon_of(history: History, delta: float, kind: str = "rdp") -> float:
    """ε at δ of one history (0 for no step; ∞ when any step has σ = 0)."""
    steps = [(sigma, q, n) for sigma, q, n in history if n > 0 and q > 0]
    if not steps:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in steps):
        return math.inf
    accountants = require_opacus()
    accountant = accountants.RDPAccountant() if kind == "rdp" else accountants.PRVAccountant()
    accountant.history = [(float(sigma), float(q), int(n)) for sigma, q, n in steps]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is valid, only looser
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


def calibrate(target_epsilon: float, delta: float, sample_rate: float, steps: int, kind: str = "rdp") -> float:
    """The noise multiplier σ whose `steps` mechanisms at rate q reach `target_epsilon` at δ (Opacus's search)."""
    require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=steps, accountant=kind))
    except ValueError as err:
        raise ConfigError(f"privacy.target_epsilon: {target_epsilon} cannot be reached in {steps} steps at "
                          f"sampling rate {sample_rate:g} ({err})") from None


class PrivacyAccountant:
    """The privacy histories of N devices (rows), and their ε."""

    def __init__(self, num_devices: int, delta: float, kind: str = "rdp") -> None:
        require_opacus()
        self.delta, self.kind = delta, kind
        self.histories: list[list[list[float]]] = [[] for _ in range(num_devices)]  # [[σ, q, steps], ...] per row
        self.assumption_broken: str | None = None

    def record(self, rows: torch.Tensor, noise_multiplier: float, sample_rate: float | torch.Tensor,
               steps: int | torch.Tensor = 1) -> None:
        """Devices `rows` ([M] long) were each subject to `steps` Gaussian mechanisms with noise multiplier σ and
        sampling rate q (per-row tensors allowed)."""
        m = len(rows)
        rates = sample_rate.tolist() if isinstance(sample_rate, torch.Tensor) else [sample_rate] * m
        counts = steps.tolist() if isinstance(steps, torch.Tensor) else [steps] * m
        for row, q, n in zip(rows.tolist(), rates, counts, strict=True):
            if n <= 0:
                continue
            history = self.histories[row]
            if history and history[-1][0] == noise_multiplier and history[-1][1] == q:
                history[-1][2] += n
            else:
                history.append([float(noise_multiplier), float(q), int(n)])

    def note(self, broken: str) -> None:
        """Record that the run does something the accountant does not assume (the ε it computes would not hold)."""
        self.assumption_broken = self.assumption_broken or broken

    def epsilons(self) -> list[float]:
        """ε of every device at δ, in row order."""
        return [epsilon_of(tuple(tuple(step) for step in h), self.delta, self.kind) for h in self.histories]

    def epsilon(self) -> float:
        """The run's ε: the largest over devices."""
        values = self.epsilons()
        return max(values) if values else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "kind": self.kind, "histories": [[list(s) for s in h] for h in self.histories],
                "assumption_broken": self.assumption_broken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta, self.kind = float(state["delta"]), str(state["kind"])
        self.histories = [[list(s) for s in h] for h in state["histories"]]
        self.assumption_broken = state["assumption_broken"]


__all__ = ["History", "PrivacyAccountant", "calibrate", "epsilon_of", "require_opacus"]
