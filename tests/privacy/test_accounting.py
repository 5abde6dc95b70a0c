"""The accountant: Opacus's reference values, per-device histories, calibration, checkpointable state."""

from __future__ import annotations

import math

import pytest
import torch

from fedge.config import ConfigError
from fedge.privacy.accounting import PrivacyAccountant, calibrate, epsilon_of


def test_rdp_reproduces_opacus_reference_value() -> None:
    # opacus/tests/accountants_test.py: σ = 1.5, q = 0.04, 2,250 steps, δ = 1e-5
    assert abs(epsilon_of(((1.5, 0.04, 2250),), 1e-5, "rdp") - 7.32911117143) < 1e-6


def test_prv_is_within_its_stated_error_of_the_reference() -> None:
    assert abs(epsilon_of(((1.5, 0.04, 2250),), 1e-5, "prv") - 6.7774) < 0.01  # eps_error = 0.01


def test_histories_are_per_device_and_merge_identical_steps() -> None:
    accountant = PrivacyAccountant(3, 1e-5)
    accountant.record(torch.tensor([0, 1]), 1.5, 0.04, 1000)
    accountant.record(torch.tensor([0]), 1.5, 0.04, 1250)
    accountant.record(torch.tensor([2]), 1.5, torch.tensor([0.04]), torch.tensor([0]))
    assert accountant.histories[0] == [[1.5, 0.04, 2250]]
    eps = accountant.epsilons()
    assert abs(eps[0] - 7.32911117143) < 1e-6 and eps[1] < eps[0] and eps[2] == 0.0
    assert accountant.epsilon() == eps[0]
    restored = PrivacyAccountant(3, 1e-5)
    restored.load_state_dict(accountant.state_dict())
    assert restored.epsilons() == eps


def test_no_noise_is_infinite_epsilon() -> None:
    assert math.isinf(epsilon_of(((0.0, 1.0, 1),), 1e-5))
    assert epsilon_of((), 1e-5) == 0.0


def test_calibration_reaches_the_target() -> None:
    sigma = calibrate(2.0, 1e-5, 0.1, 300)
    assert epsilon_of(((sigma, 0.1, 300),), 1e-5) <= 2.0 + 0.01
    assert epsilon_of(((sigma * 0.9, 0.1, 300),), 1e-5) > 2.0
    with pytest.raises(ConfigError, match="target_epsilon"):
        calibrate(1e-9, 1e-5, 1.0, 10**6)
