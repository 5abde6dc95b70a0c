"""fedmf under SecAgg / SecAgg+ (`secure.aggregation`, `fedge.recsys.secure`; issue 16): the unmasked per-item means
equal plaintext fedmf's within the quantization bound, every key, share and masked vector is counted in the ledger
and the masked uploads are whole-catalogue, the survivors' sum is recovered under dropouts, an aborted round leaves
the model alone, user-level DP keeps its ε, and impossible settings are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("cryptography")

from fedge.cli import main  # noqa: E402
from fedge.core.codec import FRAME  # noqa: E402
from fedge.messaging import Kind  # noqa: E402
from fedge.recsys.algorithms import build  # noqa: E402
from fedge.recsys.algorithms.base import Context  # noqa: E402
from fedge.recsys.runner import prepare, run  # noqa: E402
from fedge.recsys.wire import ClientRows, aggregate  # noqa: E402
from fedge.secure.quantize import step  # noqa: E402
from fedge.secure.secagg import Stage, simulated_dropouts  # noqa: E402

FULL = {"algorithm": "fedmf", "train__upload": "full"}


def _one_round(cfg, ratings, transport=None):
    """(algorithm, uploads, the aggregate the server stepped with) of round 1 with every user taking part."""
    _, data = prepare(cfg, ratings)
    ctx = Context(cfg, data, transport=transport)
    algo = build(ctx)
    state = algo.init_state(ctx.streams.generator("recsys-init"))
    uploads = algo.client_round(state, torch.arange(data.num_users), 1)
    return algo, uploads, algo.receive(state, uploads, 1)


def _bound(cfg) -> float:
    """Half a quantization step, plus float32 rounding of the means."""
    return step(cfg.secure.clip, cfg.secure.value_bits) / 2 + 1e-6


def _subset(uploads: ClientRows, keep: list[int]) -> ClientRows:
    """The uploads of the clients `keep` (user ids), renumbered from 0."""
    assert uploads.users is not None
    pos = [int(torch.nonzero(uploads.users == u)) for u in keep]
    parts = [uploads.clients(p, p + 1) for p in pos]
    return ClientRows(len(parts), uploads.num_items, torch.cat([torch.full_like(p.pair_client, k)
                                                                for k, p in enumerate(parts)]),
                      torch.cat([p.pair_item for p in parts]), torch.cat([p.item_rows for p in parts]),
                      {k: torch.cat([p.dense[k] for p in parts]) for k in uploads.dense}, "interacted",
                      users=torch.tensor(keep))


@pytest.mark.parametrize("aggregation", ["secagg", "secagg+"])
def test_secure_fedmf_equals_plaintext_per_item_means_within_the_quantization_bound(small, tiny_config, tmp_path,
                                                                                    aggregation) -> None:
    cfg_plain = tiny_config(tmp_path, algorithm="fedmf")  # interacted: per-item means over the touching clients
    cfg = tiny_config(tmp_path, **FULL, secure={"aggregation": aggregation, "neighbours": 6})
    _, uploads, plain = _one_round(cfg_plain, small)
    algo, secure_uploads, secure = _one_round(cfg, small)
    assert torch.equal(uploads.item_rows, secure_uploads.item_rows)  # the same local training
    assert torch.equal(secure.item_count, plain.item_count)  # the counts are exact
    assert 0 < (secure.item_mean - plain.item_mean).abs().max() <= _bound(cfg)
    assert all((secure.dense_mean[k] - plain.dense_mean[k]).abs().max() <= _bound(cfg) for k in plain.dense_mean)
    assert algo.secure.last["survivors"]["masked"] == 40 and not algo.secure.aborted


def test_secure_fedmf_runs_stay_close_to_plaintext(small, tiny_config, tmp_path) -> None:
    plain = run(tiny_config(tmp_path, algorithm="fedmf", train__rounds=3), small, write=False)
    secure = run(tiny_config(tmp_path, **FULL, train__rounds=3, secure={"aggregation": "secagg+"}), small,
                 write=False)
    for a, b in zip(plain.history, secure.history, strict=True):
        assert abs(a["test_hr@10"] - b["test_hr@10"]) <= 0.05 and abs(a["val_hr@10"] - b["val_hr@10"]) <= 0.05
    drift = max((secure.state.shared[k] - plain.state.shared[k]).abs().max() for k in plain.state.shared)
    assert 0 < drift < 1e-3


def test_masked_vectors_are_whole_catalogue_and_counted_loopback_equals_direct(tiny, tiny_config, tmp_path,
                                                                             recorder) -> None:
    cfg = tiny_config(tmp_path, **FULL, train__rounds=1, secure={"aggregation": "secagg+", "neighbours": 4})
    result = run(cfg, tiny, write=False, transport=recorder)
    by_kind = result.summary["bytes_by_kind"]
    assert all(by_kind[k] > 0 for k in ("keys", "shares", "masked", "unmask")) and by_kind.get("model", 0) == 0
    frames = recorder.transport.frames()
    masked = [body for frame, body in frames if frame.kind == Kind.MASKED]
    num_items, width = result.state.shared["item"].shape
    assert len(masked) == 12  # one per client, each the whole catalogue + indicators + mu, 4 bytes per value
    assert {len(body) for body in masked} == {4 * (num_items * width + num_items + 1)}
    up = sum(len(body) + FRAME.size for frame, body in frames if frame.sender_role == 0)  # Role.DEVICE sends
    assert up == round(result.summary["mb_up"] * 1e6)  # the uploads, keys, shares, unmasking are all in mb_up
    direct = run(cfg, tiny, write=False)  # the bytes that crossed the loopback transport give the same run
    assert direct.summary["bytes_by_kind"] == by_kind
    assert all(torch.equal(direct.state.shared[k], result.state.shared[k]) for k in direct.state.shared)


def test_the_survivors_sum_is_recovered_with_dropouts(small, tiny_config, tmp_path) -> None:
    secure = {"aggregation": "secagg+", "neighbours": 16, "dropout": 0.1}
    cfg = tiny_config(tmp_path, **FULL, secure=secure)
    algo, uploads, got = _one_round(cfg, small)
    dropped = simulated_dropouts(cfg.seed, 0.1, 1, torch.arange(40))
    gone = {u for stage in (Stage.KEYS, Stage.SHARES, Stage.MASKED) for u in dropped.get(stage, [])}
    summed = [u for u in range(40) if u not in gone]
    assert dropped.get(Stage.MASKED) and dropped.get(Stage.UNMASK) and 20 < len(summed) < 40
    assert algo.secure.last["survivors"]["masked"] == len(summed)
    expect = aggregate(_subset(uploads, summed))
    assert torch.equal(got.item_count, expect.item_count)
    assert (got.item_mean - expect.item_mean).abs().max() <= _bound(cfg)
    assert (got.dense_mean["mu"] - expect.dense_mean["mu"]).abs().max() <= _bound(cfg)


def test_too_few_survivors_skip_the_round_and_keep_the_model(tiny, tiny_config, tmp_path, caplog) -> None:
    cfg = tiny_config(tmp_path, **FULL, secure={"aggregation": "secagg+", "neighbours": 4, "dropout": 0.6})
    _, data = prepare(cfg, tiny)
    algo = build(Context(cfg, data))
    state = algo.init_state(algo.ctx.streams.generator("recsys-init"))
    before = {k: v.clone() for k, v in state.shared.items()}
    algo.server_aggregate(state, algo.client_round(state, torch.arange(data.num_users), 1), 1)
    assert algo.secure.aborted == [1] and "secure aggregation aborted in round 1" in caplog.text
    assert all(torch.equal(before[k], state.shared[k]) for k in before)


def test_user_level_dp_noise_before_masking_keeps_epsilon(tiny, tiny_config, tmp_path) -> None:
    privacy = {"mechanism": "user", "noise_multiplier": 0.8, "max_grad_norm": 0.5, "sample_rate": 1.0}
    plain = run(tiny_config(tmp_path, **FULL, privacy=privacy), tiny, write=False)
    secure = run(tiny_config(tmp_path, **FULL, privacy=privacy, secure={"aggregation": "secagg", "clip": 4.0}),
                 tiny, write=False)
    assert secure.summary["epsilon"] == pytest.approx(plain.summary["epsilon"]) and plain.summary["epsilon"] > 0
    assert "masked" in secure.summary["bytes_by_kind"]
    quiet = run(tiny_config(tmp_path, **FULL, privacy={**privacy, "noise_multiplier": 0.0},
                            secure={"aggregation": "secagg", "clip": 4.0}), tiny, write=False)
    # the devices' noise is in the unmasked step: far above the quantization error of a noiseless run
    noise = (secure.state.shared["item"] - quiet.state.shared["item"]).abs().max()
    assert noise > 1000 * step(4.0, 16)


@pytest.mark.parametrize(("settings", "message"), [
    (["--set", "secure.aggregation=secagg+"], "train.upload: interacted sends item requests"),
    (["--upload", "full", "--algorithm", "dfedmf", "--set", "secure.aggregation=secagg"],
     "needs a client-server recommender (fedmf, fedncf) whose server sums the uploads, not dfedmf"),
    (["--upload", "full", "--set", "secure.aggregation=ckks"], "secure.aggregation: ckks is not wired for fedge"),
    (["--upload", "full", "--set", "secure.aggregation=secagg", "--set", "secure.bits=18"],
     "secure.bits: 2^18 cannot hold the sum of 12 values of 16 bits"),
    (["--upload", "full", "--set", "secure.aggregation=secagg+", "--set", "secure.threshold=9"],
     "secure.threshold: 9: a threshold of t=9 needs at least t neighbours"),
    (["--upload", "full", "--set", "secure.aggregation=secagg+", "--set", "secure.neighbours=5"],
     "secure.neighbours: a random k-regular"),
])
def test_impossible_settings_are_one_line_errors(settings, message, ratings_dir: Path, tmp_path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = settings if "--algorithm" in settings else ["--algorithm", "fedmf", *settings]
    code = main(["recsys", "--data-dir", str(ratings_dir), "--rounds", "1", "--no-progress", "--out",
                 str(tmp_path / "x"), "--set", "data.eval_negatives=20", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
