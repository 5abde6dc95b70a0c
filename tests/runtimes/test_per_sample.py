"""The layer hooks' per-sample gradients (`fedge.runtimes.per_sample`, `fedge.runtimes.conv_per_sample`): every way
of computing a convolution's per-sample weight gradients gives the same numbers, and `LayerTaps.clipped_sum` (the
sequential DP-SGD step's lean path) equals the general path, per-sample gradients then `PerSample.clipped_sum`, with
and without a mask. Both are checked against autograd on one sample and `torch.func` (vmap of per-sample `grad`),
which tests/runtimes/test_dp_sgd.py checks against Opacus."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedge.core.privacy import clip_rows
from fedge.models.flat import FlatModel
from fedge.models.vision import lenet5, mlp
from fedge.runtimes import conv_per_sample
from fedge.runtimes.device_threads import Replica
from fedge.runtimes.per_sample import LayerTaps, functional_per_sample

SHAPES = {"lenet5-28x28": (lenet5, (1, 28, 28)), "lenet5-8x8": (lenet5, (1, 8, 8)), "mlp": (mlp, (1, 8, 8))}


@pytest.mark.parametrize("method", ["unfold", "channels_last", "grouped"])
@pytest.mark.parametrize(("channels", "out", "size", "padding"), [(1, 6, 28, 2), (6, 16, 14, 0), (3, 32, 9, 1)])
def test_every_convolution_method_gives_the_per_sample_gradients(monkeypatch: pytest.MonkeyPatch, method: str,
                                                                 channels: int, out: int, size: int,
                                                                 padding: int) -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(channels, out, 5 if size > 9 else 3, padding=padding)
    h = torch.randn(7, channels, size, size)
    go = torch.randn(7, *layer(h).shape[1:])
    # reference: sample b's weight gradient from autograd on that sample alone
    expected = torch.stack([torch.autograd.grad(layer(h[b:b + 1]), layer.weight, go[b:b + 1])[0] for b in range(7)])
    monkeypatch.setattr(conv_per_sample, "conv_method", lambda *_: method)
    got = conv_per_sample.conv_per_sample(layer, h, go)
    assert got.shape == expected.shape
    # sums of up to 784 products of unit normals: rounding is relative to the largest entry
    torch.testing.assert_close(got, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-5)


def test_the_method_depends_on_the_shape_only() -> None:
    """Chosen by shape, never by timing: the same layer and batch always take the same method."""
    narrow, wide = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(16, 32, 5)
    assert conv_per_sample.conv_method(narrow, 32, 28 * 28) == "channels_last"
    assert conv_per_sample.conv_method(wide, 32, 10 * 10) == "grouped"
    assert conv_per_sample.conv_method(narrow, 16, 8 * 8) == "unfold"


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("masked", [False, True])
def test_clipped_sum_equals_the_general_path(name: str, masked: bool) -> None:
    build, shape = SHAPES[name]
    torch.manual_seed(1)
    model = FlatModel(build(shape, 10))
    replica = Replica(model)
    replica.work.copy_(model.initial_vector() + 0.05 * torch.randn(model.dim))
    x, y = torch.randn(23, *shape), torch.randint(0, 10, (23,))
    keep = torch.rand(model.dim) < 0.7 if masked else None
    reference, losses = functional_per_sample(model, replica.work[None].clone(), x[None], y[None])
    dense = reference.dense()[0]
    if keep is not None:
        dense = dense * keep
    for max_norm in (1e-3, float(dense.norm(dim=1).median()), 1e3):
        expected = clip_rows(dense, max_norm)[0].sum(0)
        taps = LayerTaps(replica.module, model)
        with taps.active():
            general = taps.per_sample(x, y)
            lean = taps.clipped_sum(x, y, max_norm, None if keep is None else taps.kept_views(keep.float()))
        assert general is not None and lean is not None
        torch.testing.assert_close(lean, losses[0], atol=1e-6, rtol=1e-6)
        total = taps.total.clone() if keep is None else taps.total * keep
        via_general = general[0].clipped_sum(max_norm, torch.ones(1, len(y)), None if keep is None else keep[None])[0]
        if keep is not None:
            via_general = via_general * keep
        scale = max(1.0, float(expected.abs().max()))
        torch.testing.assert_close(total, expected, atol=1e-5 * scale, rtol=1e-5)
        torch.testing.assert_close(total, via_general, atol=1e-5 * scale, rtol=1e-5)
        if max_norm == 1e-3:  # every sample clipped: the sum of B vectors of norm C has norm at most B·C
            assert float(total.norm()) <= len(y) * max_norm * (1 + 1e-5)


def test_batches_of_changing_size_reuse_the_buffers_correctly() -> None:
    """Poisson batches change size from step to step: a smaller batch uses a prefix of the buffers, a larger one
    grows them; each step's clipped sum equals the general path's on that batch alone."""
    build, shape = SHAPES["lenet5-28x28"]
    torch.manual_seed(2)
    model = FlatModel(build(shape, 10))
    replica = Replica(model)
    replica.work.copy_(model.initial_vector())
    taps = LayerTaps(replica.module, model)
    with taps.active():
        for b in (9, 23, 5, 23, 31, 9):
            x, y = torch.randn(b, *shape), torch.randint(0, 10, (b,))
            lean = taps.clipped_sum(x, y, 0.5)
            assert lean is not None
            total = taps.total.clone()
            general = taps.per_sample(x, y)
            assert general is not None
            expected = general[0].clipped_sum(0.5, torch.ones(1, b))[0]
            torch.testing.assert_close(total, expected, atol=1e-6, rtol=1e-5)
    assert taps.scratch.capacity == 31
