"""hfl with SecAgg(+) on the device → edge uploads (issue 16, at test size): each edge server's model equals the
plaintext one within the quantization bound, all protocol traffic crosses the device-edge link and nothing goes
device → cloud, a single-device cluster (nothing to hide it among) aborts cleanly and its edge keeps its model, and
ε under user-level DP is unchanged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

pytest.importorskip("cryptography")

from fedge.config import build  # noqa: E402
from fedge.experiment import ExperimentConfig  # noqa: E402
from fedge.runfolder import RunResult  # noqa: E402
from fedge.runtimes.simulator import simulate  # noqa: E402

SECURE_KINDS = ("keys", "shares", "masked", "unmask")
ASSIGNMENT = [0] * 5 + [1] * 6 + [2]  # edge 2 serves a single device


def _run(secure: dict[str, Any], rounds: int = 1) -> RunResult:
    config = build(ExperimentConfig, {
        "algorithms": ["hfl"], "rounds": rounds, "data": {"devices": len(ASSIGNMENT)}, "train": {"epochs": 1},
        "hierarchy": {"clusters": 3, "kappa2": 2, "clustering": "assignment", "assignment": ASSIGNMENT},
        "secure": secure})
    return simulate(config, "hfl", None)


@pytest.mark.parametrize("secure", [{"aggregation": "secagg"}, {"aggregation": "secagg+", "neighbours": 2}])
def test_edge_models_match_plaintext_within_the_quantization_bound(secure: dict[str, Any],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    plain, masked = _run({}), _run(secure)
    edges_plain, edges_masked = plain.state.algorithm.combiner.models, masked.state.algorithm.combiner.models
    sizes = plain.extra["context"].data_sizes.to(torch.float64)
    clusters = torch.tensor(ASSIGNMENT)[plain.extra["context"].ids]
    half_step = 1.0 / (2 ** 16 - 1)  # clip 1, 16-bit quantization: half of 2·clip / (2^16 − 1)
    for edge in (0, 1):
        weights = sizes[clusters == edge]
        # each summand's rounding error ≤ half a step of its w / w_max-scaled update, times w_max / Σ w
        bound = half_step * len(weights) * float(weights.max()) / float(weights.sum())
        difference = float((edges_masked[edge] - edges_plain[edge]).abs().max())
        assert 0 < difference <= bound + 1e-7, (edge, difference, bound)
    initial = masked.state.devices.initial
    assert torch.equal(edges_masked[2], initial) and not torch.equal(edges_plain[2], initial)
    assert any("the neighbourhood of device 11" in r.getMessage() and "fewer than the threshold t=1"
               in r.getMessage() for r in caplog.records)
    kinds, links = masked.summary["bytes_by_kind"], masked.summary["bytes_by_link"]
    assert kinds["model"] == 0 and all(kinds[k] > 0 for k in SECURE_KINDS)
    assert links["device-server"] == 0
    assert links["device-edge"] == sum(kinds[k] for k in SECURE_KINDS) + kinds["download"]


def test_cloud_level_stays_plain_and_the_run_finishes() -> None:
    summary = _run({"aggregation": "secagg+", "neighbours": 2}, rounds=2).summary
    assert summary["rounds"] == 2 and summary["bytes_by_kind"]["aggregate"] > 0  # edge → cloud, plaintext models
    assert summary["bytes_by_link"]["edge-cloud"] > 0 and summary["bytes_by_link"]["device-server"] == 0


def test_dp_epsilon_is_unchanged_by_secure_edge_aggregation() -> None:
    """Under user-level DP each edge's devices add their share of the edge's noise before masking: the accountant
    records the same (σ, q), so ε is what plaintext hfl reports."""
    dp = {"mechanism": "user", "noise_multiplier": 1.0, "sample_rate": 0.5, "max_grad_norm": 0.1}
    epsilons = []
    for secure in ({}, {"aggregation": "secagg"}):
        config = build(ExperimentConfig, {
            "algorithms": ["hfl"], "rounds": 2, "data": {"devices": 12}, "train": {"epochs": 1}, "privacy": dp,
            "hierarchy": {"clusters": 2, "clustering": "assignment", "assignment": [0] * 6 + [1] * 6},
            "secure": secure})
        epsilons.append(simulate(config, "hfl", None).summary["privacy"]["epsilon"])
    assert epsilons[0] == epsilons[1] > 0
