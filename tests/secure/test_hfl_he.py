"""hfl with CKKS-encrypted device → edge uploads (issue 16, at test size; the counterpart of test_fedavg_he.py and
test_hfl_secure.py): each edge server's model equals plaintext hfl's within CKKS error, every ciphertext is counted
from its serialized bytes on the device-edge link and nothing goes device → cloud, the edge servers hold no secret
key, a single-device cluster (whose update would be the aggregate) is not aggregated, the cloud level stays
plaintext, the per-round costs reach metrics.jsonl and summary.json, and ε under user-level DP is unchanged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

ts = pytest.importorskip("tenseal")

from fedge.algorithms.components.he_edges import EncryptedUploads  # noqa: E402
from fedge.config import build  # noqa: E402
from fedge.experiment import ExperimentConfig  # noqa: E402
from fedge.runfolder import RunResult  # noqa: E402
from fedge.runtimes.simulator import simulate  # noqa: E402

ASSIGNMENT = [0] * 5 + [1] * 6 + [2]  # edge 2 serves a single device
HE_KINDS = ("keys", "masked", "unmask")


def _run(aggregation: str, rounds: int = 1, out: Path | None = None, assignment: list[int] = ASSIGNMENT,
         checkpoint_every: int = 0, **changes: Any) -> RunResult:
    config = build(ExperimentConfig, {
        "algorithms": ["hfl"], "rounds": rounds, "data": {"devices": len(assignment)}, "train": {"epochs": 1},
        "hierarchy": {"clusters": max(assignment) + 1, "kappa2": 2, "clustering": "assignment",
                      "assignment": assignment},
        "secure": {"aggregation": aggregation}, **changes})
    return simulate(config, "hfl", out, checkpoint_every=checkpoint_every)


def test_edge_models_match_plaintext_hfl_within_ckks_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    plain, he = _run("none"), _run("ckks")
    edges_plain, edges_he = plain.state.algorithm.combiner.models, he.state.algorithm.combiner.models
    initial = he.state.devices.initial
    for edge in (0, 1):
        step = edges_plain[edge] - initial
        difference = float((edges_he[edge] - edges_plain[edge]).abs().max())
        assert difference < 1e-4 * float(step.abs().max()), (edge, difference)  # CKKS error, not another model
    assert torch.equal(edges_he[2], initial) and not torch.equal(edges_plain[2], initial)
    assert any("edge 2 has a single participant (device 11)" in r.getMessage() for r in caplog.records)
    kinds, links, plain_kinds = he.summary["bytes_by_kind"], he.summary["bytes_by_link"], plain.summary["bytes_by_kind"]
    assert kinds["model"] == 0 and all(kinds[k] > 0 for k in HE_KINDS)
    assert links["device-server"] == 0
    assert links["device-edge"] == sum(kinds[k] for k in HE_KINDS) + kinds["download"]
    uploads = he.state.algorithm.combiner.secure
    assert isinstance(uploads, EncryptedUploads)
    ciphertext_bytes = sum(c["upload_bytes"] for c in uploads.costs)
    # counted from the serialized ciphertexts (plus one frame header per message): 11 devices encrypt,
    # each about 16x its fp32 upload (plaintext: 12 devices)
    assert ciphertext_bytes <= kinds["masked"] < ciphertext_bytes + 64 * 11
    assert 10 * plain_kinds["model"] < kinds["masked"] < 20 * plain_kinds["model"]
    assert sorted(uploads.contexts) == ["edge 0", "edge 1"]  # the public context once to each aggregating edge
    assert all(not ts.context_from(c).has_secret_key() for c in uploads.contexts.values())
    assert kinds["keys"] < 2 * len(uploads.contexts["edge 0"]) + 128
    # the decryptor returns one fp32 mean per aggregating edge
    assert kinds["unmask"] < 2 * (4 * he.summary["model_parameters"] + 64)


def test_cloud_level_stays_plain_over_loopback_and_costs_are_reported(tmp_path: Path) -> None:
    """Two clusters of 6; κ2 = 2: the cloud averages the two (encrypted-then-decrypted) edge models in round 2."""
    assignment = [0] * 6 + [1] * 6
    he = _run("ckks", rounds=2, out=tmp_path / "he", assignment=assignment, runtime={"transport": "loopback"})
    plain = _run("none", rounds=2, assignment=assignment)
    summary = json.loads((tmp_path / "he" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["bytes_by_kind"]["aggregate"] > 0  # edge → cloud, plaintext models
    assert summary["bytes_by_link"]["edge-cloud"] > 0 and summary["bytes_by_link"]["device-server"] == 0
    cloud_he, cloud_plain = he.state.algorithm.combiner.models[2], plain.state.algorithm.combiner.models[2]
    step = cloud_plain - he.state.devices.initial
    # round 2 trains from round 1's decrypted edge models (random CKKS noise): see the resume test below
    assert float((cloud_he - cloud_plain).abs().max()) < 1e-2 * float(step.abs().max())
    assert he.summary["accuracy_mean"] == pytest.approx(plain.summary["accuracy_mean"], abs=0.01)
    records = [json.loads(line) for line in (tmp_path / "he" / "metrics.jsonl").read_text().splitlines()]
    assert [r["he"]["aggregations"] for r in records] == [2, 2]  # edges 0 and 1
    assert all(r["he"]["encrypt_s"] > 0 and r["he"]["decrypt_s"] > 0 for r in records)
    assert [r["round"] for r in summary["he"]["per_round"]] == [1, 2]
    assert summary["he"]["per_round_mean"]["aggregate_s"] > 0


def test_dp_epsilon_is_unchanged_by_encrypted_edge_aggregation() -> None:
    """DP-HFL under CKKS: each edge's devices add their shares of its noise before encrypting; ε is plaintext's."""
    dp = {"mechanism": "user", "noise_multiplier": 1.0, "sample_rate": 0.5, "max_grad_norm": 0.1}
    runs = [_run(aggregation, rounds=2, assignment=[0] * 6 + [1] * 6, privacy=dp) for aggregation in ("none", "ckks")]
    assert runs[0].summary["privacy"]["epsilon"] == runs[1].summary["privacy"]["epsilon"] > 0
    assert runs[1].summary["bytes_by_kind"]["masked"] > 0


def test_resume_restores_the_devices_key_pair_and_the_edges_contexts(tmp_path: Path) -> None:
    """Checkpointed after round 1 and resumed to round 2: the restored key pair encrypts and decrypts round 2, the
    edges keep the public contexts they received (not sent again), and the result still matches plaintext."""
    assignment = [0] * 6 + [1] * 6
    _run("ckks", rounds=1, out=tmp_path / "he", assignment=assignment, checkpoint_every=1)
    config = build(ExperimentConfig, {
        "algorithms": ["hfl"], "rounds": 2, "data": {"devices": 12}, "train": {"epochs": 1},
        "hierarchy": {"clusters": 2, "kappa2": 2, "clustering": "assignment", "assignment": assignment},
        "secure": {"aggregation": "ckks"}})
    resumed = simulate(config, "hfl", tmp_path / "he", checkpoint_every=1, resume=True)
    plain = _run("none", rounds=2, assignment=assignment)
    uploads = resumed.state.algorithm.combiner.secure
    assert resumed.summary["rounds"] == 2 and sorted(uploads.contexts) == ["edge 0", "edge 1"]
    assert resumed.summary["bytes_by_kind"]["keys"] < 2 * len(uploads.contexts["edge 0"]) + 128  # sent once each
    assert [r["round"] for r in resumed.summary["he"]["per_round"]] == [1, 2]
    cloud, cloud_plain = resumed.state.algorithm.combiner.models[2], plain.state.algorithm.combiner.models[2]
    step = cloud_plain - resumed.state.devices.initial
    # CKKS's encryption noise is random (TenSEAL draws it unseeded) and round 2 trains from round 1's decrypted
    # aggregate, so training may amplify the ~1e-7 difference: usually ~1e-6 of the step, in about one run in six
    # ~2e-4 (measured). A key pair or context that was not restored would be off by the order of the step itself.
    assert float((cloud - cloud_plain).abs().max()) < 1e-2 * float(step.abs().max())
