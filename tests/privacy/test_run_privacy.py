"""Differential privacy in `fedge run`: user-level DP-FedAvg / DP-HFL and the peer mechanism over messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedge.cli import main
from fedge.config import ConfigError, build
from fedge.core import codec
from fedge.experiment import ExperimentConfig
from fedge.messaging import Kind, LoopbackTransport
from fedge.messaging.transport import TRANSPORTS
from fedge.privacy.accounting import epsilon_of
from fedge.runtimes.simulator import simulate

BASE = {"rounds": 3, "data": {"devices": 8}, "train": {"epochs": 1}, "pruning": {"ramp_rounds": 2},
        "neighbours": {"k_max": 3, "bootstrap_probes": 3}, "hierarchy": {"clusters": 2}}


def config(**changes: object) -> ExperimentConfig:
    return build(ExperimentConfig, {**BASE, **changes})


def without_epsilon(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "epsilon"} for m in history]


@pytest.mark.parametrize(("name", "mechanism"), [("fedavg", "user"), ("hfl", "user"), ("dfl", "peer"),
                                                 ("dpcg", "peer")])
def test_no_noise_and_no_clipping_is_the_run_without_dp(name: str, mechanism: str) -> None:
    plain = simulate(config(), name, None)
    dp = simulate(config(privacy={"mechanism": mechanism, "noise_multiplier": 0.0, "max_grad_norm": None}),
                  name, None)
    assert without_epsilon(dp.history) == plain.history
    assert all(m["epsilon"] == float("inf") for m in dp.history)


class Watched(LoopbackTransport):
    uploads: list[torch.Tensor] = []

    def carry(self, message: bytes) -> bytes:
        frame, body = codec.unframe(message)
        if frame.kind == Kind.MODEL and frame.receiver_role != 0:  # device -> aggregator
            Watched.uploads.append(codec.decode(body).values)
        return message


@pytest.mark.parametrize("name", ["fedavg", "hfl"])
def test_uploads_that_crossed_are_clipped_updates(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(TRANSPORTS, "loopback", Watched)
    Watched.uploads = []
    cfg = config(runtime={"transport": "loopback"}, privacy={"mechanism": "user", "noise_multiplier": 0.5,
                                                             "max_grad_norm": 0.05})
    result = simulate(cfg, name, None)
    norms = torch.stack([u.norm() for u in Watched.uploads])
    assert len(norms) > 0 and float(norms.max()) <= 0.05 * (1 + 1e-5)
    history = result.state.accountant.histories
    assert all(h == [[0.5, 1.0, 3]] for h in history)  # q = 1: everyone, every round
    assert abs(result.summary["privacy"]["epsilon"] - epsilon_of(((0.5, 1.0, 3),), 1e-5)) < 1e-9


def test_noise_moves_the_model_and_the_seed_reproduces_it() -> None:
    cfg = config(privacy={"mechanism": "user", "noise_multiplier": 1.0, "max_grad_norm": 0.1})
    a, b = simulate(cfg, "fedavg", None), simulate(cfg, "fedavg", None)
    assert a.history == b.history
    plain = simulate(config(privacy={"mechanism": "user", "noise_multiplier": 0.0, "max_grad_norm": 0.1}),
                     "fedavg", None)
    assert not torch.equal(a.state.algorithm.combiner.model, plain.state.algorithm.combiner.model)


def test_poisson_sampling_takes_a_fraction_q_of_the_devices() -> None:
    cfg = config(rounds=40, data={"devices": 20}, privacy={"mechanism": "user", "sample_rate": 0.3,
                                                             "noise_multiplier": 0.01})
    participants = [m["participants"] for m in simulate(cfg, "fedavg", None).history]
    mean = sum(participants) / len(participants)
    assert 4.5 < mean < 7.5 and len(set(participants)) > 2  # 20 × 0.3 = 6 on average, and it varies


def test_adaptive_clipping_moves_c_towards_the_quantile() -> None:
    cfg = config(rounds=6, privacy={"mechanism": "user", "noise_multiplier": 0.001, "max_grad_norm": 50.0,
                                    "adaptive_clipping": True, "target_quantile": 0.5, "clip_learning_rate": 0.5})
    result = simulate(cfg, "fedavg", None)
    assert result.summary["privacy"]["max_grad_norm"] < 50.0 * 0.5  # every update was far within C: C shrinks


def test_peer_releases_are_accounted_per_device_and_kind() -> None:
    cfg = config(privacy={"mechanism": "peer", "noise_multiplier": 2.0, "max_grad_norm": 1.0})
    result = simulate(cfg, "dpcg", None)
    histories = result.state.accountant.histories
    # dpcg: every device sends its model each round and answers probes: two releases a round at most
    assert all(1 <= h[0][2] <= 2 * 3 for h in histories if h)
    assert result.summary["privacy"]["epsilon"] == max(result.summary["privacy"]["epsilon_by_device"])
    pruned = simulate(config(privacy={"mechanism": "peer", "noise_multiplier": 2.0}), "dpmn", None)
    assert pruned.summary["privacy"]["epsilon"] is None and "masks" in pruned.summary["privacy"]["not_covered"]


def test_target_epsilon_stops_before_it_is_exceeded() -> None:
    first = epsilon_of(((1.0, 1.0, 1),), 1e-5)
    target = epsilon_of(((1.0, 1.0, 2),), 1e-5) + 1e-6  # two rounds fit, the third would exceed it
    assert target > first
    result = simulate(config(rounds=5, privacy={"mechanism": "user", "noise_multiplier": 1.0,
                                                "target_epsilon": target}), "fedavg", None)
    assert len(result.history) == 2 and result.summary["privacy"]["epsilon"] <= target
    assert "before round 3" in result.summary["privacy"]["stopped_at_target"]


def test_calibration_spends_the_target_in_the_planned_rounds() -> None:
    result = simulate(config(rounds=4, privacy={"mechanism": "user", "calibrate": True, "target_epsilon": 3.0,
                                                "max_grad_norm": 0.01}), "fedavg", None)
    privacy = result.summary["privacy"]
    assert len(result.history) == 4 and 2.9 < privacy["epsilon"] <= 3.01 and privacy["noise_multiplier"] > 0


def test_resume_keeps_the_accountant(tmp_path: Path) -> None:
    cfg = config(rounds=3, privacy={"mechanism": "user", "noise_multiplier": 1.0})
    straight = simulate(cfg, "fedavg", tmp_path / "a", checkpoint_every=1)
    simulate(config(rounds=2, privacy={"mechanism": "user", "noise_multiplier": 1.0}), "fedavg", tmp_path / "b",
             checkpoint_every=1)
    resumed = simulate(cfg, "fedavg", tmp_path / "b", checkpoint_every=1, resume=True)
    assert resumed.history == straight.history
    assert resumed.summary["privacy"]["epsilon"] == straight.summary["privacy"]["epsilon"]


@pytest.mark.parametrize(("flags", "needle"), [
    (["--set", "privacy.noise_multiplier=-1"], "privacy.noise_multiplier"),
    (["--set", "privacy.max_grad_norm=0"], "privacy.max_grad_norm"),
    (["--set", "privacy.delta=1"], "privacy.delta"),
    (["--set", "privacy.delta=0"], "privacy.delta"),
    (["--set", "privacy.sample_rate=0"], "privacy.sample_rate"),
    (["--set", "privacy.sample_rate=1.5"], "privacy.sample_rate"),
    (["--set", "privacy.mechanism=user", "--set", "privacy.target_epsilon=0.001"], "privacy.target_epsilon"),
    (["--set", "privacy.mechanism=user", "--algorithm", "dpmn"], "privacy.mechanism"),
    (["--set", "privacy.mechanism=peer", "--algorithm", "fedavg"], "privacy.mechanism"),
    (["--set", "privacy.calibrate=true"], "privacy.calibrate"),
    (["--set", "privacy.max_grad_norm=null", "--set", "privacy.noise_multiplier=1"], "privacy.max_grad_norm"),
])
def test_bad_privacy_settings_are_one_line_errors(flags: list[str], needle: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    algorithm = [] if "--algorithm" in flags else ["--algorithm", "fedavg"]
    code = main(["run", "--rounds", "2", "--devices", "4", "--no-progress", "--out", str(tmp_path / "r"),
                 *algorithm, *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_mechanism_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="server.sample_fraction"):
        simulate(config(server={"sample_fraction": 0.5}, privacy={"mechanism": "user"}), "fedavg", None)


@pytest.mark.parametrize("name", ["fedavg", "dpmn"])
def test_dp_sgd_without_noise_or_clipping_is_the_run_without_dp(name: str) -> None:
    plain = simulate(config(), name, None)
    dp = simulate(config(privacy={"mechanism": "dp-sgd", "noise_multiplier": 0.0, "max_grad_norm": None}), name,
                  None)
    assert without_epsilon(dp.history) == plain.history


def test_dp_sgd_records_each_devices_sampling_rate_and_steps() -> None:
    cfg = config(rounds=2, pruning={"ramp_rounds": 2, "tolerance": 1.0},
                 privacy={"mechanism": "dp-sgd", "noise_multiplier": 1.0, "max_grad_norm": 1.0})
    result = simulate(cfg, "dpmn", None)
    from fedge.runtimes.batches import dp_sgd_schedule

    rates, steps = dp_sgd_schedule(result.extra["context"].data_sizes.tolist(), 1, cfg.train.batch_size)
    for row, history in enumerate(result.state.accountant.histories):
        assert history == [[1.0, float(rates[row]), 2 * int(steps[row])]]
    assert result.summary["privacy"]["epsilon"] == max(result.summary["privacy"]["epsilon_by_device"]) > 0
    uncovered = simulate(config(rounds=1, privacy={"mechanism": "dp-sgd"}), "dpmn", None)
    assert uncovered.summary["privacy"]["epsilon"] is None and "validation" in \
        uncovered.summary["privacy"]["not_covered"]
