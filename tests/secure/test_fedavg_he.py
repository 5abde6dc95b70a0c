"""fedavg under CKKS inside `fedge run` (issue 16, acceptance 4's last clause, at test size; docs/secure.md has the
20-device, 30-round run): the same accuracy as plaintext within 0.1 points, the devices' model within CKKS error of
the plaintext server's, every ciphertext counted in the ledger, the server holding no secret key, devices that sat
rounds out catching up from the encrypted aggregates, per-round costs in metrics.jsonl and summary.json, and
Paillier / DP / other algorithms refused on one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

ts = pytest.importorskip("tenseal")

from fedge.algorithms.components.he_averaging import EncryptedAveraging, he_inputs  # noqa: E402
from fedge.algorithms.context import Round, RunContext  # noqa: E402
from fedge.cli import main  # noqa: E402
from fedge.config import build  # noqa: E402
from fedge.experiment import ExperimentConfig  # noqa: E402
from fedge.privacy.config import PrivacyConfig  # noqa: E402
from fedge.privacy.mechanisms import UserLevel  # noqa: E402
from fedge.runtimes.simulator import RunResult, _with_report, simulate  # noqa: E402


def _run(aggregation: str, out: Path | None = None, **changes: Any) -> RunResult:
    base = {"algorithms": ["fedavg"], "rounds": 3, "data": {"devices": 6}, "train": {"epochs": 1},
            "secure": {"aggregation": aggregation}}
    return simulate(build(ExperimentConfig, {**base, **changes}), "fedavg", out)


def _models(result: RunResult) -> torch.Tensor:
    return result.state.algorithm.combiner.model


def test_ckks_fedavg_matches_plaintext_within_a_tenth_of_a_point(tmp_path: Path) -> None:
    plain, he = _run("none"), _run("ckks", tmp_path / "he")
    assert abs(he.summary["accuracy_mean"] - plain.summary["accuracy_mean"]) <= 0.001
    difference = (_models(he) - _models(plain)).abs().max()
    assert float(difference) < 1e-4 * float(_models(plain).abs().max())  # CKKS error, not a different model
    kinds, plain_kinds = he.summary["bytes_by_kind"], plain.summary["bytes_by_kind"]
    assert kinds["model"] == 0 and kinds["masked"] > 0 and kinds["download"] > plain_kinds["download"]
    # 21,386 values in 6 ciphertexts of 4,096 slots per device: about 16x the fp32 upload, counted from the bytes.
    assert 10 * plain_kinds["model"] < kinds["masked"] < 20 * plain_kinds["model"]
    combiner = he.state.algorithm.combiner
    assert isinstance(combiner, EncryptedAveraging)
    context = combiner.server_context
    assert len(context) <= kinds["keys"] < len(context) + 64  # the public context, sent once (plus a frame header)
    assert not ts.context_from(context).has_secret_key()
    assert [c["round"] for c in combiner.costs] == [1, 2, 3]
    assert all(c["encrypt_s"] > 0 and c["aggregate_s"] > 0 and c["decrypt_s"] > 0 for c in combiner.costs)


def test_per_round_he_costs_are_in_metrics_and_summary(tmp_path: Path) -> None:
    """`Combiner.report_round` / `report`: each round's encrypt / aggregate / decrypt seconds and bytes in its
    metrics.jsonl record, all rounds and their means in summary.json; nothing for a plaintext run."""
    he, plain = _run("ckks", tmp_path / "he", rounds=2), _run("none", tmp_path / "plain", rounds=2)
    summary = json.loads((tmp_path / "he" / "summary.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "he" / "metrics.jsonl").read_text().splitlines()]
    costs = he.state.algorithm.combiner.costs
    assert [r["he"]["encrypt_s"] for r in records] == [c["encrypt_s"] for c in costs]
    assert all(r["he"]["aggregations"] == 1 and r["he"]["decrypt_s"] > 0 for r in records)
    assert [r["round"] for r in summary["he"]["per_round"]] == [1, 2] and summary["he"]["scheme"] == "ckks"
    mean = summary["he"]["per_round_mean"]
    assert mean["upload_bytes"] == sum(c["upload_bytes"] for c in costs) / 2 > 0
    assert set(mean) >= {"encrypt_s", "aggregate_s", "decrypt_s", "aggregate_bytes"}
    assert "he" not in plain.summary and all("he" not in r for r in plain.history)
    assert "he" not in json.loads((tmp_path / "plain" / "summary.json").read_text())


def test_a_report_may_not_replace_a_runtime_key() -> None:
    with pytest.raises(ValueError, match="would replace"):
        _with_report({"round": 1, "loss_mean": 0.5}, {"round": 2})
    assert _with_report({"round": 1}, {"he": {}}) == {"round": 1, "he": {}}


def test_sampled_out_devices_catch_up_from_encrypted_aggregates_over_loopback() -> None:
    changes = {"rounds": 4, "data": {"devices": 8}, "server": {"sample_fraction": 0.5},
               "runtime": {"transport": "loopback"}}
    plain, he = _run("none", **changes), _run("ckks", **changes)
    assert abs(he.summary["accuracy_mean"] - plain.summary["accuracy_mean"]) <= 0.001
    assert float((_models(he) - _models(plain)).abs().max()) < 1e-4 * float(_models(plain).abs().max())
    combiner = he.state.algorithm.combiner
    assert combiner.version == 4 and int(combiner.synced.max()) == 4
    # the server keeps exactly the aggregates some device has not applied yet
    assert sorted(combiner.pending) == list(range(int(combiner.synced.min()) + 1, 5))


def test_resume_restores_the_key_pair_and_the_pending_aggregates(tmp_path: Path) -> None:
    """A CKKS run checkpointed after round 1 and resumed to round 4 (half the devices per round, so aggregates wait
    for sampled-out devices across the checkpoint) still matches plaintext: the devices' restored key decrypts the
    later aggregates, the server keeps its received public context."""
    changes = {"data": {"devices": 8}, "server": {"sample_fraction": 0.5}, "train": {"epochs": 1},
               "algorithms": ["fedavg"], "secure": {"aggregation": "ckks"}}
    simulate(build(ExperimentConfig, {**changes, "rounds": 1}), "fedavg", tmp_path / "he", checkpoint_every=1)
    resumed = simulate(build(ExperimentConfig, {**changes, "rounds": 4}), "fedavg", tmp_path / "he",
                       checkpoint_every=1, resume=True)
    plain = _run("none", rounds=4, data={"devices": 8}, server={"sample_fraction": 0.5})
    assert resumed.summary["rounds"] == 4 and resumed.state.algorithm.combiner.version == 4
    assert float((_models(resumed) - _models(plain)).abs().max()) < 1e-4 * float(_models(plain).abs().max())
    assert resumed.summary["bytes_by_kind"]["keys"] < 2 * len(resumed.state.algorithm.combiner.server_context)


DP = {"mechanism": "user", "noise_multiplier": 1.0, "sample_rate": 0.5, "max_grad_norm": 0.1}


def test_dp_epsilon_is_unchanged_by_encryption() -> None:
    """Acceptance 6 for CKKS: the devices add the noise before encrypting; the accountant records the same (σ, q)
    for the same Poisson-sampled rounds, so ε equals plaintext DP-FedAvg's."""
    plain, he = _run("none", privacy=DP, data={"devices": 8}), _run("ckks", privacy=DP, data={"devices": 8})
    assert he.summary["privacy"]["epsilon"] == plain.summary["privacy"]["epsilon"] > 0
    assert [r["participants"] for r in he.history] == [r["participants"] for r in plain.history]
    assert he.summary["bytes_by_kind"]["masked"] > 0 and he.summary["bytes_by_kind"]["model"] == 0


def test_devices_add_the_dp_noise_before_encryption() -> None:
    """What each device encrypts is its L2-clipped update plus n_u / w_u with n_u ~ N(0, σ²C²w_max²/m): the
    weighted sum carries the server-side mechanism's N(0, σ²C²w_max²) (measured over 200,000 coordinates), and the
    devices divide by q·W_pool."""
    n, dim, sigma, norm = 5, 200_000, 2.0, 0.5
    sizes = torch.tensor([10, 20, 30, 40, 80])
    ctx = RunContext.standalone(n, dim, seed=3, data_sizes=sizes)
    dp = UserLevel(build(PrivacyConfig, {"mechanism": "user", "noise_multiplier": sigma, "max_grad_norm": norm,
                                         "sample_rate": 0.5}), sigma)
    population = torch.ones(n, dtype=torch.bool)
    rnd = Round(1, population, population, population)
    senders = torch.tensor([0, 2, 3])
    updates = torch.randn(3, dim, generator=torch.Generator().manual_seed(0)) * 0.01
    weights, inputs, divisor = he_inputs(ctx, rnd, senders, updates, "data_size", 1.0, dp, population)
    assert weights == [10, 30, 40] and divisor == 0.5 * float(sizes.sum())
    clipped = dp.clip(updates)[0].to(torch.float64)
    noise = torch.tensor(weights, dtype=torch.float64) @ (torch.from_numpy(inputs) - clipped)
    assert float(noise.std()) == pytest.approx(sigma * norm * 80, rel=0.02)  # w_max of the population: 80
    assert abs(float(noise.mean())) < 0.02 * sigma * norm * 80
    again = he_inputs(ctx, rnd, senders, updates, "data_size", 1.0, dp, population)[1]
    assert (again == inputs).all()  # each device's share from its own stream of (seed, device, round)


@pytest.mark.parametrize("settings,message", [
    (["--set", "secure.aggregation=paillier"], "secure.aggregation: paillier is a library only"),
    (["--algorithm", "dfl", "--set", "secure.aggregation=ckks"], "ckks needs a weighted sum at an aggregator"),
    (["--algorithm", "hfl", "--set", "secure.aggregation=ckks", "--set", "hierarchy.clustering=similarity"],
     "not combined with hierarchy.clustering: similarity"),
    (["--set", "secure.aggregation=ckks", "--set", "privacy.mechanism=user", "--set",
      "privacy.adaptive_clipping=true"], "privacy.adaptive_clipping: not with secure aggregation"),
])
def test_impossible_he_settings_are_one_line_errors(settings: list[str], message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = settings if "--algorithm" in settings else ["--algorithm", "fedavg", *settings]
    code = main(["run", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
