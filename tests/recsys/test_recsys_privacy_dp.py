"""User-level DP-FedAvg for fedmf/fedncf (`fedge.recsys.dp`; McMahan et al. 2018, Andrew et al. 2021): the
mechanism's parts one at a time — clipping (also on the bytes that crossed a watched loopback transport), the noise,
Poisson sampling, adaptive clipping and the fixed-denominator estimator. Whole runs, accounting, bad settings and
resume: test_recsys_privacy_dp_runs.py."""

from __future__ import annotations

import pytest
import torch

from fedge.config import build
from fedge.core.codec import decode
from fedge.core.privacy import clip_rows
from fedge.core.streams import Streams
from fedge.messaging import Kind, Role
from fedge.privacy.config import PrivacyConfig
from fedge.recsys.dp import BIT, UserLevelDP, upload_norms
from fedge.recsys.runner import run
from fedge.recsys.wire import Accumulator, ClientRows


def _dp(num_users: int, **settings: object) -> UserLevelDP:
    cfg = build(PrivacyConfig, {"mechanism": "user", **settings})
    return UserLevelDP(cfg, num_users, rounds=10, streams=Streams(0))


def _uploads(norms: list[float], num_items: int = 3) -> ClientRows:
    """One client per norm: an item row [0.6 n, 0] on item b % num_items and a dense "mu" of 0.8 n."""
    b = len(norms)
    n = torch.tensor(norms)
    rows = torch.stack([0.6 * n, torch.zeros(b)], dim=1)
    return ClientRows(b, num_items, torch.arange(b), torch.arange(b) % num_items, rows, {"mu": (0.8 * n)[:, None]},
                      users=torch.arange(b))


def _gathered(uploads: ClientRows) -> Accumulator:
    acc = Accumulator(uploads.num_items, uploads.item_dim, {k: v.shape[1:] for k, v in uploads.dense.items()},
                      uploads.mode)
    acc.add(uploads)
    return acc


def _shared(num_items: int = 3) -> dict[str, torch.Tensor]:
    return {"item": torch.zeros(num_items, 2), "mu": torch.zeros(1)}


def test_clipping_is_clip_rows_on_each_whole_upload() -> None:
    uploads = _uploads([0.5, 2.0, 7.0, 0.0])
    assert torch.allclose(upload_norms(uploads), torch.tensor([0.5, 2.0, 7.0, 0.0], dtype=torch.float64))
    clipped = _dp(4, max_grad_norm=1.0, noise_multiplier=0.0).clip(uploads)
    dense = torch.stack([uploads.vector(b)[0] for b in range(4)])
    expected, _ = clip_rows(dense, 1.0)
    got = torch.stack([clipped.vector(b)[0] for b in range(4)])
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert torch.equal(got[0], dense[0]) and torch.equal(got[3], dense[3])  # within C: untouched
    # no clipping (C = None, σ = 0 only): the very same uploads
    assert _dp(4, max_grad_norm=None, noise_multiplier=0.0).clip(uploads) is uploads


@pytest.mark.parametrize("algorithm,adaptive", [("fedmf", False), ("fedncf", False), ("fedmf", True)])
def test_uploads_that_crossed_never_exceed_c(tiny, tiny_config, tmp_path, recorder, algorithm: str,
                                             adaptive: bool) -> None:
    privacy = {"mechanism": "user", "noise_multiplier": 0.5, "max_grad_norm": 0.05, "sample_rate": 0.7,
               "adaptive_clipping": adaptive, "clipped_count_stddev": 2.0, "target_quantile": 0.9}
    cfg = tiny_config(tmp_path, algorithm=algorithm, train__rounds=3, privacy=privacy)
    result = run(cfg, tiny, write=False, transport=recorder)
    clip_of_round = {r["round"]: r["max_grad_norm"] for r in result.history}
    uploads = [(f, decode(body)) for f, body in recorder.transport.frames()
               if f.kind == Kind.MODEL and f.sender_role == Role.DEVICE and f.receiver_role == Role.SERVER]
    assert len(uploads) == sum(r["clients"] for r in result.history) > 0
    shared = sum(t.numel() for t in result.state.shared.values())
    at_c = 0
    for frame, decoded in uploads:
        c = clip_of_round[frame.round]
        values = decoded.values
        assert values.numel() == shared + adaptive  # the shared model, and the bit with adaptive clipping
        if adaptive:
            assert float(values[-1]) in (-0.5, 0.5)
            values = values[:-1]
        norm = float(torch.linalg.vector_norm(values.double()))
        assert norm <= c * (1 + 1e-5)
        at_c += norm > c * (1 - 1e-4)
    assert at_c >= len(uploads) // 2  # C = 0.05 clips most of them: the bound is not vacuous
    if adaptive:
        assert len(set(clip_of_round.values())) == 3  # C moved every round


def test_noise_reaches_every_coordinate_with_std_sigma_c_over_qu() -> None:
    """One user and no updates: what the server adds is the noise alone, N(0, σ²C²) / (qU) per coordinate."""
    dp = _dp(1, noise_multiplier=2.0, max_grad_norm=0.5)
    draws = torch.stack([torch.cat([g.item_mean.reshape(-1), g.dense_mean["mu"]])
                         for g in (dp.release(_shared(50), None, rnd) for rnd in range(1, 401))])
    assert draws.shape == (400, 101)
    assert bool((draws != 0).all())  # every coordinate, touched or not, every round
    assert abs(float(draws.std()) - 1.0) < 0.02  # σC / (qU) = 2 · 0.5 / 1
    assert abs(float(draws.mean())) < 0.02
    per_coordinate = draws.std(dim=0)
    assert float(per_coordinate.min()) > 0.8 and float(per_coordinate.max()) < 1.2
    assert not torch.equal(draws[0], draws[1])  # fresh noise each round (stream keyed by round)
    # with sampling the denominator is the expected number of participants: σC / (qU) = 2 · 0.5 / (0.5 · 4)
    dp = _dp(4, noise_multiplier=2.0, max_grad_norm=0.5, sample_rate=0.5)
    half = torch.stack([dp.release(_shared(50), None, rnd).item_mean for rnd in range(1, 201)])
    assert abs(float(half.std()) - 0.5) < 0.02


def test_without_noise_the_server_adds_exactly_the_clipped_sum_over_qu() -> None:
    """σ = 0, C = None: the clipped sum / (qU) bit for bit, every row counted — not the per-item average."""
    uploads = _uploads([1.0, 3.0, 5.0, 2.0], num_items=3)  # items 0, 1, 2, 0
    acc = _gathered(uploads)
    got = _dp(8, noise_multiplier=0.0, max_grad_norm=None, sample_rate=0.5).release(_shared(), acc, 1)
    assert torch.equal(got.item_mean, acc.item_sum / 4.0)
    assert torch.equal(got.dense_mean["mu"], acc.dense_sum[0] / 4.0)
    assert got.item_count.tolist() == [4.0, 4.0, 4.0]  # every row moves (per-item counts are not released)
    # σ = 0 with clipping: no noise either, the clipped sum
    dp = _dp(8, noise_multiplier=0.0, max_grad_norm=2.0, sample_rate=0.5)
    clipped = dp.clip(uploads)
    got = dp.release(_shared(), _gathered(clipped), 1)
    assert torch.equal(got.item_mean, _gathered(clipped).item_sum / 4.0)


def test_poisson_sampling_at_rate_q() -> None:
    dp = _dp(200, sample_rate=0.3)
    taken = torch.zeros(300, 200)
    for rnd in range(1, 301):
        users = dp.participants(rnd)
        assert torch.equal(users, users.sort().values)
        taken[rnd - 1, users] = 1
    counts = taken.sum(1)
    assert abs(float(counts.mean()) - 60.0) < 1.5  # q·U
    assert abs(float(counts.var()) / (200 * 0.3 * 0.7) - 1) < 0.3  # binomial: independent users
    per_user = taken.mean(0)
    assert float(per_user.min()) > 0.2 and float(per_user.max()) < 0.4
    assert torch.equal(_dp(200, sample_rate=0.3).participants(7), dp.participants(7))  # a pure function of the round
    assert torch.equal(_dp(50, sample_rate=1.0).participants(3), torch.arange(50))


@pytest.mark.parametrize("quantile,low,high", [(0.5, 9.0, 12.0), (0.9, 17.0, 19.5)])
def test_adaptive_clipping_moves_c_to_the_target_quantile(quantile: float, low: float, high: float) -> None:
    """Norms 1..20 every round; from C = 1, C ends near the target quantile of the norms (σ = 0: no count noise)."""
    dp = _dp(20, noise_multiplier=0.0, max_grad_norm=1.0, adaptive_clipping=True, target_quantile=quantile)
    uploads = _uploads([float(n) for n in range(1, 21)])
    for rnd in range(1, 301):
        clipped = dp.clip(uploads)
        expected_bits = (upload_norms(uploads) <= dp.max_norm).float() - 0.5
        assert torch.equal(clipped.dense[BIT][:, 0], expected_bits)
        dp.release(_shared(), _gathered(clipped), rnd)
    assert low <= dp.max_norm <= high
    # with noise on the count (σ > 0) it still gets there
    dp = _dp(20, noise_multiplier=1.0, max_grad_norm=1.0, adaptive_clipping=True, target_quantile=quantile,
             clipped_count_stddev=1.0)
    assert dp.update_noise_multiplier == pytest.approx((1.0 - 0.25) ** -0.5)
    for rnd in range(1, 301):
        dp.release(_shared(), _gathered(dp.clip(uploads)), rnd)
    assert low - 3 <= dp.max_norm <= high + 3
