"""Homomorphic encryption of uploads (issue 16, acceptance 4 and 5 at library level): CKKS sample-weighted FedAvg of
LeNet-5-sized updates from 10 devices within 1e-6 relative error at most 16x the fp32 bytes; Paillier's packed
fixed-point weighted sum exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.models import FlatModel, build_model

ts = pytest.importorskip("tenseal")
pytest.importorskip("phe")

from fedge.secure.he import Ckks, Paillier, run_round  # noqa: E402


def _lenet5_dim() -> int:
    """Parameters of fedge's LeNet-5 on 28x28 grey images, 10 classes (MNIST)."""
    return FlatModel(build_model("lenet5", (1, 28, 28), 10)).dim


def test_ckks_weighted_fedavg_of_lenet5_updates_from_10_devices() -> None:
    dim = _lenet5_dim()
    generator = torch.Generator().manual_seed(0)
    updates = [(torch.randn(dim, generator=generator) * 0.01).double().numpy() for _ in range(10)]
    weights = [int(w) for w in torch.randint(20, 200, (10,), generator=generator)]
    scheme = Ckks()
    mean, cost = run_round(scheme, updates, weights)
    exact = sum(w * u for w, u in zip(weights, updates)) / sum(weights)
    assert np.linalg.norm(mean - exact) / np.linalg.norm(exact) <= 1e-6
    chunks = -(-dim // scheme.slots)
    assert all(size <= 16 * 4 * dim for size in cost.upload_bytes)  # at most 16x fp32
    assert cost.download_bytes < cost.upload_bytes[0]  # the aggregate is rescaled: one modulus fewer
    assert len(scheme.encrypt(updates[0])) == chunks  # as few ciphertexts as the slots allow
    assert all(seconds > 0 for seconds in cost.seconds.values())


def test_ckks_server_side_holds_no_secret_key() -> None:
    scheme = Ckks()
    server_context = ts.context_from(scheme.public_context_bytes)
    assert not server_context.has_secret_key() and scheme.context.has_secret_key()
    blob = scheme.encrypt(np.ones(8))[0]
    with pytest.raises(ValueError):
        ts.ckks_vector_from(server_context, blob).decrypt()


def test_paillier_packed_weighted_sum_is_exact() -> None:
    scheme = Paillier(key_bits=1024, precision_bits=24, clip=1.0, max_total_weight=1 << 16)
    generator = torch.Generator().manual_seed(1)
    updates = [((torch.rand(300, generator=generator) * 2 - 1) * 0.5).double().numpy() for _ in range(5)]
    weights = [3, 17, 40, 1, 250]
    assert scheme.slots_per_ciphertext >= 10  # several fixed-point values per ciphertext
    uploads = [scheme.encrypt(u) for u in updates]
    assert len(uploads[0]) == -(-300 // scheme.slots_per_ciphertext)
    sums = scheme.decrypt_sum(scheme.weighted_sum(uploads, weights), 300)
    encoded = [scheme.encode(u) for u in updates]
    assert sums == [sum(w * q[i] for w, q in zip(weights, encoded)) for i in range(300)]  # exact integers
    mean, cost = run_round(scheme, updates, weights)
    exact = sum(w * u for w, u in zip(weights, updates)) / sum(weights)
    assert np.abs(mean - exact).max() <= 0.5 / 2 ** 24  # within half a fixed-point step
    assert cost.upload_bytes[0] == len(uploads[0]) * scheme.ciphertext_bytes


def test_paillier_refuses_weights_that_could_overflow_a_slot() -> None:
    scheme = Paillier(key_bits=512, precision_bits=8, max_total_weight=100)
    uploads = [scheme.encrypt(np.zeros(4))]
    with pytest.raises(ValueError, match="sum to at most 100"):
        scheme.weighted_sum(uploads, [101])
