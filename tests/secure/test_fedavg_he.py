"""fedavg under CKKS inside `fedge run` (issue 16, acceptance 4's last clause, at test size; docs/secure.md has the
20-device, 30-round run): the same accuracy as plaintext within 0.1 points, the devices' model within CKKS error of
the plaintext server's, every ciphertext counted in the ledger, the server holding no secret key, devices that sat
rounds out catching up from the encrypted aggregates, and Paillier / DP / other algorithms refused on one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

ts = pytest.importorskip("tenseal")

from fedge.algorithms.components.he_averaging import EncryptedAveraging  # noqa: E402
from fedge.cli import main  # noqa: E402
from fedge.config import build  # noqa: E402
from fedge.experiment import ExperimentConfig  # noqa: E402
from fedge.runtimes.simulator import RunResult, simulate  # noqa: E402


def _run(aggregation: str, **changes: Any) -> RunResult:
    base = {"algorithms": ["fedavg"], "rounds": 3, "data": {"devices": 6}, "train": {"epochs": 1},
            "secure": {"aggregation": aggregation}}
    return simulate(build(ExperimentConfig, {**base, **changes}), "fedavg", None)


def _models(result: RunResult) -> torch.Tensor:
    return result.state.algorithm.combiner.model


def test_ckks_fedavg_matches_plaintext_within_a_tenth_of_a_point() -> None:
    plain, he = _run("none"), _run("ckks")
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


@pytest.mark.parametrize("settings,message", [
    (["--set", "secure.aggregation=paillier"], "secure.aggregation: paillier is a library only"),
    (["--algorithm", "hfl", "--set", "secure.aggregation=ckks"], "ckks is wired for fedavg only, not hfl"),
    (["--set", "secure.aggregation=ckks", "--set", "privacy.mechanism=user"],
     "ckks is not combined with privacy.mechanism: user"),
])
def test_impossible_he_settings_are_one_line_errors(settings: list[str], message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = settings if "--algorithm" in settings else ["--algorithm", "fedavg", *settings]
    code = main(["run", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
