"""The batched trainer's DP-SGD shortcuts change no number: batches gathered a block of steps at a time, labels as
one-hot, the first layer's input norms gathered, the clipped sum concatenated; and a device's result depends neither
on where it is stored, nor on which devices share its chunk, nor on how many steps are gathered at once."""

from __future__ import annotations

import pytest
import torch

from fedge.config import build
from fedge.core.privacy import PerSample
from fedge.core.streams import Streams
from fedge.experiment import ExperimentConfig
from fedge.runtimes import dp_sgd
from fedge.runtimes.batches import Stacked, gather_padded, poisson_plan
from fedge.runtimes.dense_stack import dense_layers, dense_per_sample
from fedge.runtimes.dp_sgd import DPSGD
from fedge.runtimes.setup import prepare
from fedge.runtimes.trainer import BatchedTrainer


def test_gather_padded_equals_padding_each_step() -> None:
    sizes, steps, rates = [37, 5, 100, 12], [6, 3, 4, 6], [0.25, 0.5, 0.1, 0.3]
    plan = poisson_plan(sizes, steps, rates, [torch.Generator().manual_seed(k) for k in range(4)])
    g = torch.Generator().manual_seed(9)
    data = Stacked([torch.randn(n, 3, generator=g) for n in sizes], [torch.randint(0, 5, (n,)) for n in sizes])
    rows = torch.tensor([0, 3, 2, 1])  # longest first, as the lockstep runs them
    counts = torch.tensor(steps)[rows]
    span = torch.arange(int(counts.max()))[:, None]
    r = (plan.start[rows][None, :] + span).clamp_max(len(plan.size) - 1)
    size = torch.where(span < counts[None, :], plan.size[r], 0)
    stacked = torch.cat([plan.samples + data.offsets[rows.new_tensor([0, 1, 2, 3])].repeat_interleave(
        torch.tensor(steps)).repeat_interleave(plan.size), torch.zeros(int(plan.size.max()), dtype=torch.long)])
    active = (span < counts[None, :]).sum(1).tolist()
    widths = size.max(1).values.tolist()
    xs, ys, valid = gather_padded(data.x, data.y, stacked, plan.first[r], size, active, widths)
    at = 0
    for step, (m, w) in enumerate(zip(active, widths, strict=True)):
        local = plan.padded(rows[:m], step)
        assert local.shape[1] == w
        x, y, ok = data.gather(rows[:m], local)
        part = slice(at, at + m * w)
        assert torch.equal(valid[part].view(m, w).bool(), ok)
        assert torch.equal(xs[part].view(m, w, 3)[ok], x[ok]) and torch.equal(ys[part].view(m, w)[ok], y[ok])
        at += m * w
    assert at == len(xs)


def test_dense_shortcuts_are_bit_for_bit() -> None:
    config = build(ExperimentConfig, {"data": {"devices": 4}, "train": {"model": "mlp"}})
    setup = prepare(config)
    layers = dense_layers(setup.model)
    assert layers is not None
    g = torch.Generator().manual_seed(3)
    m, b = 3, 7
    params = setup.initial + 0.1 * torch.randn(m, setup.model.dim, generator=g)
    x = torch.randn(m, b, *setup.data.devices[0].x_train.shape[1:], generator=g)
    y = torch.randint(0, 10, (m, b), generator=g)
    valid = (torch.rand(m, b, generator=g) < 0.8).float()
    plain, losses = dense_per_sample(layers, params, x, y)
    onehot, losses_onehot = dense_per_sample(layers, params, x, y, torch.nn.functional.one_hot(y, 10).float())
    assert torch.equal(losses, losses_onehot)
    assert all(torch.equal(a[2], c[2]) and torch.equal(a[3], c[3]) for a, c in zip(plain.outer, onehot.outer,
                                                                                   strict=True))
    flat = x.reshape(m, b, -1)
    right_sq = [None] * (len(layers) - 1) + [(flat * flat).sum(-1)]
    weights = plain.clip_weights(0.5, valid)
    assert torch.equal(weights, plain.clip_weights(0.5, valid, None, right_sq))
    dense = plain.dense()
    clipped = (dense * weights[..., None]).sum(1)
    torch.testing.assert_close(plain.weighted_sum(weights), clipped, atol=1e-6, rtol=1e-5)
    untiled = PerSample(plain.dim + 3, plain.full, plain.outer)  # parts leave coordinates out: zeros there
    out = untiled.weighted_sum(weights)
    assert torch.equal(out[:, :plain.dim], plain.weighted_sum(weights)) and bool((out[:, plain.dim:] == 0).all())


@pytest.mark.parametrize("masked", [False, True])
def test_batched_dp_sgd_is_independent_of_order_chunks_and_blocks(monkeypatch: pytest.MonkeyPatch,
                                                                  masked: bool) -> None:
    config = build(ExperimentConfig, {"data": {"dataset": "synthetic", "devices": 12},
                                      "train": {"model": "mlp", "epochs": 1, "momentum": 0.9}})
    setup = prepare(config)
    n, d = len(setup.data.devices), setup.model.dim
    masks = torch.ones(n, d, dtype=torch.bool)
    if masked:
        masks[::3] = torch.rand(len(masks[::3]), d, generator=torch.Generator().manual_seed(0)) < 0.6

    def train(order: torch.Tensor, chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        bank, momentum = setup.initial.expand(n, d).clone() * masks, torch.zeros(n, d)
        losses = BatchedTrainer(setup.model, setup.data.devices, config.train, chunk=chunk).train_all(
            bank, masks, momentum, order, None, Streams(4).device_generators("train", order, 1),
            dp=DPSGD(1.0, 0.5))
        out = torch.zeros(n)
        out[order] = losses
        return bank, out

    everyone = train(torch.arange(n))
    assert not torch.equal(everyone[0], setup.initial.expand(n, d) * masks)
    for other in (train(torch.arange(n).flip(0)), train(torch.randperm(n, generator=torch.Generator().manual_seed(1)),
                                                         chunk=5)):
        assert all(torch.equal(a, b) for a, b in zip(everyone, other, strict=True))
    monkeypatch.setattr(dp_sgd, "GATHER_BYTES", 1)  # every step gathered on its own
    assert all(torch.equal(a, b) for a, b in zip(everyone, train(torch.arange(n)), strict=True))
