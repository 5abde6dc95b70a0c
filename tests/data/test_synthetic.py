"""Synthetic(α, β) of FedProx: shapes, per-device indices, determinism, heterogeneity controls."""

from __future__ import annotations

import pytest
import torch

from fedge.config import ConfigError
from fedge.data.synthetic import generate_synthetic


def _gen(seed: int, **kwargs: object) -> tuple:
    return generate_synthetic(10, 1.0, 1.0, torch.Generator().manual_seed(seed), **kwargs)


def test_shapes_and_device_indices_partition_the_splits() -> None:
    ds, train_idx, test_idx = _gen(0)
    assert ds.name == "synthetic_1_1" and ds.num_classes == 10 and ds.input_shape == (60,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert len(train_idx) == len(test_idx) == 10
    assert torch.equal(torch.cat(train_idx), torch.arange(len(ds.x_train)))
    assert torch.equal(torch.cat(test_idx), torch.arange(len(ds.x_test)))
    for tr, te in zip(train_idx, test_idx, strict=True):
        n = len(tr) + len(te)
        assert n >= 50  # lognormal + min_samples
        assert len(tr) == int(0.9 * n)  # the reference split
    assert int(ds.y_train.min()) >= 0 and int(ds.y_train.max()) <= 9


def test_deterministic_under_seed() -> None:
    a, a_tr, _ = _gen(7)
    b, b_tr, _ = _gen(7)
    c, _, _ = _gen(8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert all(torch.equal(x, y) for x, y in zip(a_tr, b_tr, strict=True))
    assert len(a.x_train) != len(c.x_train) or not torch.equal(a.x_train, c.x_train)


def test_feature_covariance_is_diagonal_power_law() -> None:
    ds, train_idx, _ = generate_synthetic(1, 0.0, 0.0, torch.Generator().manual_seed(1), samples_mean=9.0,
                                          samples_sigma=0.0)
    var = ds.x_train.var(dim=0)
    expected = torch.arange(1, 61, dtype=torch.float32).pow(-1.2)
    assert len(ds.x_train) > 7000
    assert torch.allclose(var, expected, rtol=0.1)


def test_beta_controls_how_far_device_feature_means_spread() -> None:
    def spread(beta: float) -> float:
        ds, idx, _ = generate_synthetic(20, 0.0, beta, torch.Generator().manual_seed(3))
        means = torch.stack([ds.x_train[i].mean() for i in idx])
        return float(means.std())

    assert spread(5.0) > 2.0 * spread(0.0)


def _dominant_class_share(ds: object, idx: list[torch.Tensor]) -> float:
    """Mean over devices of the share of the device's most frequent label (1.0: every device sees one class)."""
    shares = [float(torch.bincount(ds.y_train[i], minlength=10).max()) / len(i) for i in idx]  # type: ignore[attr-defined]
    return sum(shares) / len(shares)


def test_iid_is_far_less_label_skewed_than_synthetic_1_1() -> None:
    # Synthetic(1, 1) shifts each device's model and inputs, so each device is dominated by a few labels (the
    # non-IID-ness FedProx studies); Synthetic-IID shares one model and zero-mean inputs across devices.
    iid, iid_idx, _ = generate_synthetic(10, 1.0, 1.0, torch.Generator().manual_seed(2), iid=True)
    het, het_idx, _ = generate_synthetic(10, 1.0, 1.0, torch.Generator().manual_seed(2))
    assert iid.name == "synthetic_iid" and abs(float(iid.x_train.mean())) < 0.1
    share_iid, share_het = _dominant_class_share(iid, iid_idx), _dominant_class_share(het, het_idx)
    assert share_iid < 0.45 < 0.65 < share_het, (share_iid, share_het)


@pytest.mark.parametrize("kwargs,needle", [
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"min_samples": 1}, "min_samples"),
    ({"samples_sigma": -1.0}, "samples_sigma"),
])
def test_bad_arguments_are_config_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _gen(0, **kwargs)
    with pytest.raises(ConfigError, match="num_devices"):
        generate_synthetic(0, 1.0, 1.0, torch.Generator())
