"""fedavg with secure aggregation (issue 16, acceptance 3 and 6, at test size; docs/secure.md has the full runs):
the same accuracy as plaintext, at most 2x the plaintext upload bytes, ε unchanged with DP, noise added by the
devices before masking, aborted rounds skipped, impossible settings refused on one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("cryptography")

from fedge.algorithms.components.secure_averaging import SecureUploads  # noqa: E402
from fedge.algorithms.context import Round, RunContext  # noqa: E402
from fedge.cli import main  # noqa: E402
from fedge.config import build  # noqa: E402
from fedge.experiment import ExperimentConfig  # noqa: E402
from fedge.privacy.config import PrivacyConfig  # noqa: E402
from fedge.privacy.mechanisms import UserLevel  # noqa: E402
from fedge.runtimes.simulator import simulate  # noqa: E402
from fedge.secure.config import SecureConfig  # noqa: E402

UPLOAD_KINDS = ("keys", "shares", "masked", "unmask")


def _run(tmp_path: Path, name: str, **changes: Any) -> dict[str, Any]:
    base = {"algorithms": ["fedavg"], "rounds": 3, "data": {"devices": 50}, "train": {"epochs": 1}}
    config = build(ExperimentConfig, {**base, **changes})
    return simulate(config, "fedavg", tmp_path / name).summary


def test_secagg_plus_matches_plaintext_accuracy_within_half_a_point_at_under_2x_bytes(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain")
    secure = _run(tmp_path, "secure", secure={"aggregation": "secagg+"})
    assert abs(secure["accuracy_mean"] - plain["accuracy_mean"]) <= 0.005
    plain_upload = plain["bytes_by_kind"]["model"]
    secure_upload = sum(secure["bytes_by_kind"][kind] for kind in UPLOAD_KINDS)
    assert secure["bytes_by_kind"]["model"] == 0 and all(secure["bytes_by_kind"][k] > 0 for k in UPLOAD_KINDS)
    assert plain_upload < secure_upload <= 2 * plain_upload
    assert secure["bytes_by_kind"]["download"] == plain["bytes_by_kind"]["download"]


def test_loopback_transport_gives_the_same_metrics(tmp_path: Path) -> None:
    changes = {"algorithms": ["fedavg"], "rounds": 2, "data": {"devices": 10},
               "secure": {"aggregation": "secagg+", "neighbours": 4, "dropout": 0.1}}
    for transport in ("direct", "loopback"):
        build_config = build(ExperimentConfig, {**changes, "train": {"epochs": 1}, "runtime": {"transport": transport}})
        simulate(build_config, "fedavg", tmp_path / transport)
    direct = next((tmp_path / "direct").rglob("metrics.jsonl")).read_bytes()
    assert direct == next((tmp_path / "loopback").rglob("metrics.jsonl")).read_bytes()


def test_dp_epsilon_is_unchanged_by_secure_aggregation(tmp_path: Path) -> None:
    dp = {"mechanism": "user", "noise_multiplier": 1.0, "sample_rate": 0.5, "max_grad_norm": 0.1}
    changes = {"rounds": 2, "data": {"devices": 10}, "privacy": dp}
    plain = _run(tmp_path, "plain", **changes)
    secure = _run(tmp_path, "secure", **changes, secure={"aggregation": "secagg"})
    assert secure["privacy"]["epsilon"] == plain["privacy"]["epsilon"] > 0


def test_devices_add_the_dp_noise_before_masking() -> None:
    """Zero updates, σ = 1, C = 1: the unmasked step is pure noise of the devices, with standard deviation
    sqrt(m / t) · σC / W (m summed devices, t the threshold), at least the server-side mechanism's σC / W."""
    devices, dim = 20, 3000
    ctx = RunContext.standalone(devices, dim)
    secure = SecureUploads(build(SecureConfig, {"aggregation": "secagg", "clip": 4.0}), "data_size")
    dp = UserLevel(build(PrivacyConfig, {"mechanism": "user", "noise_multiplier": 1.0}), 1.0)
    everyone = torch.ones(devices, dtype=torch.bool)
    rnd = Round(1, everyone, everyone, everyone)
    step = secure.step(ctx, rnd, torch.arange(devices), torch.zeros(devices, dim), dp, everyone)
    assert step is not None
    threshold = secure.cfg.threshold_for(devices)
    expected = (devices / threshold) ** 0.5 / devices
    assert abs(float(step.std()) - expected) < 0.05 * expected
    assert float(step.std()) > 1.0 / devices  # at least the noise of the server-side mechanism
    assert abs(float(step.mean())) < 4 * expected / dim ** 0.5


def test_aborted_rounds_are_skipped_and_the_run_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    summary = _run(tmp_path, "aborting", rounds=3, data={"devices": 10},
                   secure={"aggregation": "secagg", "threshold": 9, "dropout": 0.2})
    assert summary["rounds"] == 3
    aborts = [r.getMessage() for r in caplog.records if "secure aggregation aborted" in r.getMessage()]
    assert aborts and all("fewer than the threshold t=9" in m and "the model is not updated" in m for m in aborts)
    history = [json.loads(line) for line in next(tmp_path.rglob("metrics.jsonl")).read_text().splitlines()]
    assert len(history) == 3


@pytest.mark.parametrize("settings,message", [
    (["--algorithm", "dpmn", "--set", "secure.aggregation=secagg"], "secure.aggregation: secagg needs a weighted sum"),
    (["--devices", "10", "--set", "secure.aggregation=secagg", "--set", "secure.threshold=10"],
     "secure.threshold: 10 is larger than the neighbourhood"),
    (["--set", "secure.aggregation=secagg+", "--set", "secure.neighbours=5"], "secure.neighbours: a random k-regular"),
    (["--devices", "50", "--set", "secure.aggregation=secagg", "--set", "secure.bits=20"],
     "secure.bits: 2^20 cannot hold the sum of 50 values"),
    (["--set", "secure.aggregation=secagg", "--set", "privacy.mechanism=user", "--set",
      "privacy.adaptive_clipping=true"], "privacy.adaptive_clipping: not with secure aggregation"),
])
def test_impossible_settings_are_one_line_errors(settings: list[str], message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = settings if "--algorithm" in settings else ["--algorithm", "fedavg", *settings]
    code = main(["run", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
