"""User-level DP-FedAvg in whole `fedge recsys` runs (`fedge.recsys.dp`): equivalence with no DP where it can hold,
the accounting against `fedge.privacy.accounting.epsilon_of`, stopping at a target ε, one-line errors for bad
settings, and checkpoint/resume keeping the accountant's history and the adaptive clipping norm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fedge import cli
from fedge.output import read_jsonl
from fedge.privacy.accounting import calibrate, epsilon_of
from fedge.recsys import checkpoint
from fedge.recsys.runner import run

WALL_CLOCK = ("round_s", "mean_round_s", "environment", "run_id")
DP_KEYS = ("epsilon", "max_grad_norm")
BYTES = ("mb_up", "mb_down", "mb_total", "bytes_by_link")


def _without(records: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


def _user(**settings: object) -> dict[str, object]:
    return {"mechanism": "user", **settings}


def test_without_noise_or_clipping_full_uploads_equal_no_dp(tiny, tiny_config, tmp_path) -> None:
    """σ = 0, C = None, q = 1 with `full` uploads: every item has all U clients as contributors, so the fixed
    denominator q·U is the per-item average's, and the run is bitwise the non-private one. (In `interacted` mode the
    per-item average divides by each item's own count, which DP must not release: the runs differ by design.)"""
    opts = {"algorithm": "fedmf", "train__rounds": 3, "train__upload": "full", "train__server_optimizer": "adam",
            "train__server_lr": 0.05}
    plain = run(tiny_config(tmp_path, **opts), tiny, write=False)
    dp = run(tiny_config(tmp_path, **opts, privacy=_user(noise_multiplier=0.0, max_grad_norm=None)), tiny,
             write=False)
    assert _without(dp.history, WALL_CLOCK + DP_KEYS) == _without(plain.history, WALL_CLOCK)
    assert all(torch.equal(dp.state.shared[k], plain.state.shared[k]) for k in plain.state.shared)
    assert torch.equal(dp.state.user, plain.state.user)
    assert dp.summary["epsilon"] is None  # σ = 0: ε = ∞, written as null (strict JSON)


@pytest.mark.parametrize("algorithm", ["fedmf", "fedncf"])
def test_interacted_and_full_uploads_give_the_same_private_model(tiny, tiny_config, tmp_path, algorithm) -> None:
    """Under DP the server noises the whole model and divides by q·U either way: only the bytes differ."""
    privacy = _user(noise_multiplier=0.8, max_grad_norm=0.3, sample_rate=0.6)
    runs = [run(tiny_config(tmp_path, algorithm=algorithm, train__rounds=2, train__upload=mode, privacy=privacy),
                tiny, write=False) for mode in ("interacted", "full")]
    assert _without(runs[0].history, WALL_CLOCK + BYTES) == _without(runs[1].history, WALL_CLOCK + BYTES)
    assert all(torch.equal(runs[0].state.shared[k], runs[1].state.shared[k]) for k in runs[0].state.shared)
    assert runs[0].history[0]["mb_up"] < runs[1].history[0]["mb_up"]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_the_accountants_for_the_recorded_history(tiny, tiny_config, tmp_path, accountant) -> None:
    privacy = _user(noise_multiplier=1.3, max_grad_norm=0.5, sample_rate=0.5, accountant=accountant, delta=1e-4)
    result = run(tiny_config(tmp_path, train__rounds=3, privacy=privacy), tiny, write=False)
    for k, record in enumerate(result.history, start=1):
        assert record["epsilon"] == epsilon_of(((1.3, 0.5, k),), 1e-4, accountant)
        assert 0 <= record["clients"] <= 12
    summary = result.summary
    assert summary["epsilon"] == result.history[-1]["epsilon"] > result.history[0]["epsilon"] > 0
    assert (summary["delta"], summary["noise_multiplier"], summary["accountant"]) == (1e-4, 1.3, accountant)
    assert summary["max_grad_norm"] == 0.5 and summary["rounds_done"] == 3 and summary["stopped"] is None


def test_calibrate_picks_sigma_for_the_planned_rounds(tiny, tiny_config, tmp_path) -> None:
    privacy = _user(calibrate=True, target_epsilon=5.0, sample_rate=0.5, max_grad_norm=0.5)
    result = run(tiny_config(tmp_path, train__rounds=3, privacy=privacy), tiny, write=False)
    assert result.summary["noise_multiplier"] == calibrate(5.0, 1e-5, 0.5, 3)
    assert 4.5 < result.summary["epsilon"] <= 5.0 and result.summary["rounds_done"] == 3


def test_target_epsilon_ends_the_run_before_the_round_that_would_exceed_it(tiny, tiny_config, tmp_path) -> None:
    # σ 1, q 0.5: ε 3.89 / 5.38 / 6.48 after rounds 1 / 2 / 3, so a target of 6 allows two rounds of six
    cfg = tiny_config(tmp_path, train__rounds=6, eval_every=5,
                      privacy=_user(noise_multiplier=1.0, max_grad_norm=0.5, sample_rate=0.5, target_epsilon=6.0))
    result = run(cfg, tiny, checkpoint_every=1)
    assert len(result.history) == 2 and result.summary["rounds_done"] == 2
    assert "stopped after round 2: round 3 would bring ε to 6.482 > 6" in result.summary["stopped"]
    assert result.summary["epsilon"] == result.history[-1]["epsilon"] < 6
    assert "val_hr@10" in result.history[-1]  # the last round was evaluated
    assert result.summary["test_hr@10"] == result.history[result.summary["best_round"] - 1]["test_hr@10"]
    written = json.loads((cfg.out_dir / "summary.json").read_text())
    assert written["rounds_done"] == 2 and (cfg.out_dir / "topk.json").exists()
    again = run(cfg, tiny, resume=True)  # resuming a stopped run trains nothing more
    assert _without(again.history, WALL_CLOCK) == _without(result.history, WALL_CLOCK)
    assert again.summary["stopped"] == result.summary["stopped"]



USER = ["--set", "privacy.mechanism=user"]
BAD = [
    (["--algorithm", "dfedmf", *USER], "privacy.mechanism: user needs a client-server recommender (fedmf, fedncf), "
                                       "not dfedmf"),
    (["--algorithm", "fedmeta", *USER], "not fedmeta"),
    (["--set", "privacy.mechanism=dp-sgd"], "privacy.mechanism: dp-sgd is not available in fedge recsys"),
    (["--set", "privacy.mechanism=peer"], "privacy.mechanism: peer is not available in fedge recsys"),
    ([*USER, "--set", "train.client_fraction=0.5"], "train.client_fraction: 0.5 is fixed-size sampling"),
    ([*USER, "--set", "train.value_dtype=fp16"], "train.value_dtype: fp16"),
    ([*USER, "--set", "privacy.calibrate=true"], "privacy.calibrate: needs privacy.target_epsilon"),
    ([*USER, "--set", "privacy.max_grad_norm=null"], "privacy.max_grad_norm: null"),
    ([*USER, "--set", "privacy.noise_multiplier=-1"], "privacy.noise_multiplier"),
    ([*USER, "--set", "privacy.sample_rate=0"], "privacy.sample_rate"),
    ([*USER, "--set", "privacy.delta=1"], "privacy.delta"),
    ([*USER, "--set", "privacy.target_epsilon=0.5"], "privacy.target_epsilon: 0.5 is exceeded by round 1 already"),
    ([*USER, "--set", "privacy.adaptive_clipping=true", "--set", "privacy.clipped_count_stddev=0.1"],
     "privacy.clipped_count_stddev: 0.1 is too small for noise multiplier 1"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_privacy_settings_are_one_line_errors(ratings_dir, tmp_path, capsys, args, message) -> None:
    flags = ["--data-dir", str(ratings_dir), "--no-progress", "--set", "data.eval_negatives=20", "--rounds", "2"]
    assert cli.main(["recsys", *flags, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_cli_reports_epsilon(ratings_dir, tmp_path, capsys) -> None:
    flags = ["--data-dir", str(ratings_dir), "--no-progress", "--set", "data.eval_negatives=20", "--rounds", "2"]
    assert cli.main(["recsys", *flags, "--out", str(tmp_path / "out"), *USER, "--set", "privacy.sample_rate=0.5"]) == 0
    err = capsys.readouterr().err  # the table goes to stdout, notes to stderr
    assert "user-level DP: ε = 5.377 at δ = 1e-05 after 2 rounds" in " ".join(err.split())


def test_killed_and_resumed_dp_run_reports_the_same_epsilon(tiny, tiny_config, tmp_path, monkeypatch) -> None:
    """Calibrated σ, adaptive clipping and Poisson sampling: the resumed run continues the accountant's history and
    the clipping norm where the checkpoint left them."""
    privacy = _user(calibrate=True, target_epsilon=8.0, sample_rate=0.6, max_grad_norm=0.2, adaptive_clipping=True,
                    clipped_count_stddev=2.0)
    cfg = tiny_config(tmp_path, train__rounds=4, privacy=privacy)
    real_save = checkpoint.save

    def keep_round_two(path: Path, saved: checkpoint.RecCheckpoint) -> None:
        real_save(path, saved)
        if saved.round == 2:
            shutil.copy(path, tmp_path / "round2.pt")

    monkeypatch.setattr(checkpoint, "save", keep_round_two)
    straight = run(cfg, tiny, checkpoint_every=1)
    out = cfg.out_dir
    # the folder as a kill after round 2 leaves it: the round-2 checkpoint, two rounds of metrics, no summary
    shutil.copy(tmp_path / "round2.pt", out / checkpoint.FILENAME)
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                               (out / "metrics.jsonl").read_text().splitlines()[:2]))
    (out / "summary.json").unlink()
    resumed = run(cfg, tiny, resume=True)
    assert _without(resumed.history, WALL_CLOCK) == _without(straight.history, WALL_CLOCK)
    assert _without(read_jsonl(out / "metrics.jsonl"), WALL_CLOCK) == _without(straight.history, WALL_CLOCK)
    for key in ("epsilon", "max_grad_norm", "noise_multiplier", "update_noise_multiplier", "test_hr@10"):
        assert resumed.summary[key] == straight.summary[key], key
    assert len({r["max_grad_norm"] for r in straight.history}) == 4  # C did move: the test would see a lost C
