"""SecAgg / SecAgg+ (issue 16, acceptance 1 and 2): 50 devices, 30% dropping at each stage; the server's total is
exactly the integer sum of the survivors' quantized updates, the dequantized mean is within the quantization bound
of the float mean, too few survivors abort cleanly, and one device's masked upload looks uniform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("cryptography")
stats = pytest.importorskip("scipy.stats")

from fedge.config import ConfigError  # noqa: E402
from fedge.core import codec  # noqa: E402
from fedge.messaging import DirectTransport, Kind, Ledger, LoopbackTransport  # noqa: E402
from fedge.secure.crypto import derive_key, expand_mask  # noqa: E402
from fedge.secure.quantize import check_headroom, dequantize_sum, quantize, step  # noqa: E402
from fedge.secure.secagg import SecAggAborted, SecAggSettings, Stage, secure_sum  # noqa: E402
from fedge.secure.secagg_device import SecAggDevice, mask_sign, unpack_values  # noqa: E402

DEVICES, DIM, CLIP, VALUE_BITS, BITS = 50, 200, 1.0, 16, 32
SECAGG = SecAggSettings(threshold=20, neighbours=None, bits=BITS)
SECAGG_PLUS = SecAggSettings(threshold=8, neighbours=20, bits=BITS)


class WatchedLoopback(LoopbackTransport):
    """A loopback transport that keeps every message that crossed, as bytes."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.seen: list[bytes] = []

    def carry(self, message: bytes) -> bytes:
        self.seen.append(message)
        return message

    def masked_uploads(self) -> dict[int, np.ndarray]:
        out = {}
        for message in self.seen:
            frame, body = codec.unframe(message)
            if frame.kind == Kind.MASKED:
                out[frame.sender] = unpack_values(body, BITS)
        return out


def _updates(seed: int = 0) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {u: (torch.rand(DIM, generator=generator) * 2 - 1) * 0.9 for u in range(DEVICES)}  # within the clip


def _dropping(fraction: float, seed: int = 1) -> set[int]:
    order = torch.randperm(DEVICES, generator=torch.Generator().manual_seed(seed)).tolist()
    return set(order[:round(fraction * DEVICES)])


@pytest.mark.parametrize("settings", [SECAGG, SECAGG_PLUS], ids=["secagg", "secagg+"])
@pytest.mark.parametrize("stage", [Stage.KEYS, Stage.SHARES, Stage.MASKED, Stage.UNMASK])
def test_sum_of_survivors_is_exact_with_30_percent_dropping(settings: SecAggSettings, stage: Stage) -> None:
    updates = _updates()
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in updates.items()}
    dropped = _dropping(0.3)
    ledger = Ledger(DEVICES)
    result = secure_sum(quantized, settings, round_number=5, seed=0, transport=DirectTransport(ledger),
                        dropouts={stage: dropped})
    # Devices that drop after sending their masked input are still summed; earlier ones are not.
    expected_summed = sorted(set(range(DEVICES)) - (dropped if stage < Stage.UNMASK else set()))
    assert result.summed == expected_summed
    assert result.survivors["unmask"] == sorted(set(range(DEVICES)) - dropped)
    plain = sum(quantized[u] for u in result.summed) % (1 << BITS)
    np.testing.assert_array_equal(result.total, plain)
    m = len(result.summed)
    mean = dequantize_sum(result.total, m, CLIP, VALUE_BITS) / m
    float_mean = torch.stack([updates[u] for u in result.summed]).double().mean(0)
    assert float((mean - float_mean).abs().max()) <= step(CLIP, VALUE_BITS) / 2 + 1e-12
    assert all(ledger.bytes_by_kind[kind] > 0 for kind in ("keys", "shares", "masked", "unmask"))


def test_dropouts_at_every_stage_at_once_and_loopback_equals_direct() -> None:
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in _updates(3).items()}
    order = torch.randperm(DEVICES, generator=torch.Generator().manual_seed(7)).tolist()
    dropouts = {Stage.KEYS: order[:3], Stage.SHARES: order[3:7], Stage.MASKED: order[7:11], Stage.UNMASK: order[11:15]}
    ledgers, totals = [Ledger(DEVICES), Ledger(DEVICES)], []
    for transport in (DirectTransport(ledgers[0]), LoopbackTransport(ledgers[1])):
        result = secure_sum(quantized, SECAGG_PLUS, 2, 0, transport, dropouts=dropouts)
        assert result.summed == sorted(set(range(DEVICES)) - set(order[:11]))
        np.testing.assert_array_equal(result.total, sum(quantized[u] for u in result.summed) % (1 << BITS))
        totals.append(result.total)
    np.testing.assert_array_equal(totals[0], totals[1])
    assert ledgers[0].state_dict() == ledgers[1].state_dict()  # sizes are the lengths of the bytes that crossed


@pytest.mark.parametrize("settings,stage", [(SECAGG, Stage.MASKED), (SECAGG, Stage.UNMASK),
                                            (SECAGG_PLUS, Stage.SHARES), (SECAGG_PLUS, Stage.UNMASK)])
def test_too_few_survivors_abort_with_a_clear_message(settings: SecAggSettings, stage: Stage) -> None:
    fraction = 0.7
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in _updates().items()}
    with pytest.raises(SecAggAborted, match=r"round 4: .* fewer than the threshold t=\d+"):
        secure_sum(quantized, settings, 4, 0, DirectTransport(Ledger(DEVICES)), dropouts={stage: _dropping(fraction)})


def test_headroom_is_checked_with_a_one_line_error() -> None:
    check_headroom(DEVICES, VALUE_BITS, BITS)
    with pytest.raises(ConfigError, match=r"^secure.bits: 2\^20 cannot hold the sum of 50 values of 16 bits "
                                          r"\(need secure.bits >= 22"):
        check_headroom(DEVICES, VALUE_BITS, 20)


def test_runs_are_reproducible_under_a_seed_and_differ_across_seeds() -> None:
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in list(_updates().items())[:10]}
    settings = SecAggSettings(threshold=4, neighbours=6, bits=BITS)
    uploads = []
    for seed in (0, 0, 1):
        transport = WatchedLoopback(Ledger(DEVICES))
        secure_sum(quantized, settings, 1, seed, transport)
        uploads.append(transport.masked_uploads())
    assert all(np.array_equal(uploads[0][u], uploads[1][u]) for u in uploads[0])
    assert not any(np.array_equal(uploads[0][u], uploads[2][u]) for u in uploads[0])


def test_system_keys_give_the_same_sum_with_fresh_masks() -> None:
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in list(_updates().items())[:10]}
    settings = SecAggSettings(threshold=4, neighbours=6, bits=BITS, key_source="system")
    uploads = []
    for _ in range(2):
        transport = WatchedLoopback(Ledger(DEVICES))
        result = secure_sum(quantized, settings, 1, 0, transport, dropouts={Stage.MASKED: {3}})
        np.testing.assert_array_equal(result.total, sum(quantized[u] for u in result.summed) % (1 << BITS))
        uploads.append(transport.masked_uploads())
    assert not any(np.array_equal(uploads[0][u], uploads[1][u]) for u in uploads[0])


@pytest.mark.parametrize("settings", [SECAGG, SECAGG_PLUS], ids=["secagg", "secagg+"])
def test_one_masked_upload_is_indistinguishable_from_uniform(settings: SecAggSettings) -> None:
    """Device 0 uploads all zeros in one round and all (2^16 − 1) in another: the two masked vectors it sent (what
    the aggregator sees) pass a two-sample Kolmogorov-Smirnov test and a uniformity test on Z_{2^32}, although the
    inputs are as far apart as they can be."""
    dim = 4000
    masked = []
    for round_number, value in ((1, 0), (2, (1 << VALUE_BITS) - 1)):
        quantized = {u: np.full(dim, value, dtype=np.uint64) for u in range(DEVICES)}
        transport = WatchedLoopback(Ledger(DEVICES))
        secure_sum(quantized, settings, round_number, 0, transport, dropouts={Stage.MASKED: _dropping(0.3) - {0}})
        masked.append(transport.masked_uploads()[0].astype(np.float64) / 2.0 ** BITS)
    assert stats.ks_2samp(masked[0], masked[1]).pvalue > 0.01
    for sample in masked:
        assert stats.kstest(sample, "uniform").pvalue > 0.01
        counts = np.histogram(sample, bins=16, range=(0, 1))[0]
        assert stats.chisquare(counts).pvalue > 0.01


def test_removing_any_single_mask_leaves_the_sum_wrong() -> None:
    """Σ y over the summed devices minus every mask the server removes is the plain sum; leaving out any one of those
    masks (a survivor's self mask, or the pairwise mask between a survivor and a device that dropped) gives a
    different vector in nearly every coordinate, and so does summing all but one survivor."""
    devices, round_number = 12, 3
    settings = SecAggSettings(threshold=4, neighbours=6, bits=BITS)
    quantized = {u: quantize(x, CLIP, VALUE_BITS) for u, x in list(_updates().items())[:devices]}
    transport = WatchedLoopback(Ledger(devices))
    result = secure_sum(quantized, settings, round_number, 0, transport, dropouts={Stage.MASKED: {2, 7}})
    uploads = transport.masked_uploads()
    modulus = 1 << BITS
    clients = {u: SecAggDevice(u, round_number, 0, settings.threshold, BITS) for u in range(devices)}
    masks = [clients[u].self_mask(DIM).astype(np.int64) for u in result.summed]
    for dropped in (2, 7):
        peers = [u for u in result.summed if dropped in _neighbours_of(transport, u)]
        for w in peers:
            key = clients[dropped].mask_keys.agree(clients[w].mask_keys.public_bytes)
            pair = expand_mask(derive_key(key, "pair-mask", round_number), DIM, BITS).astype(np.int64)
            masks.append(mask_sign(w, dropped) * pair)
    assert len(masks) > len(result.summed)  # there are pairwise masks to remove
    plain = sum(quantized[u].astype(np.int64) for u in result.summed) % modulus
    raw = sum(uploads[u].astype(np.int64) for u in result.summed)
    np.testing.assert_array_equal((raw - sum(masks)) % modulus, plain)
    np.testing.assert_array_equal(result.total.astype(np.int64), plain)
    for i in range(len(masks)):
        partial = (raw - sum(m for j, m in enumerate(masks) if j != i)) % modulus
        assert np.mean(partial != plain) > 0.99
    for left_out in result.summed:
        others = [u for u in result.summed if u != left_out]
        without = (sum(uploads[u].astype(np.int64) - clients[u].self_mask(DIM).astype(np.int64) for u in others)
                   % modulus)
        assert np.mean(without != sum(quantized[u].astype(np.int64) for u in others) % modulus) > 0.99


def _neighbours_of(transport: WatchedLoopback, device: int) -> set[int]:
    """The neighbours the server told `device` had survived or dropped, read from the KEYS relay it received."""
    from fedge.secure.secagg_device import unpack_keys

    for message in transport.seen:
        frame, body = codec.unframe(message)
        if frame.kind == Kind.KEYS and frame.receiver == device and frame.receiver_role == 0:
            return set(unpack_keys(body))
    raise AssertionError(f"device {device} received no keys")
