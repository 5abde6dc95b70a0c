"""Record-level DP-SGD in the trainers (`fedge.runtimes.dp_sgd`) against Opacus: per-sample gradients, one private
step, the sampling schedule; and its invariants: clipping bound, masks, the σ = 0 / C = ∞ identity, per-device
independence."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedge.config import ConfigError, build
from fedge.core.privacy import Noise, PerSample, clip_rows
from fedge.core.streams import Streams
from fedge.experiment import ExperimentConfig
from fedge.models.flat import FlatModel
from fedge.runtimes.batches import poisson_plan
from fedge.runtimes.dense_stack import dense_layers, dense_per_sample
from fedge.runtimes.device_threads import intra_op_threads
from fedge.runtimes.dp_sgd import (
    DPSGD,
    LayerTaps,
    dp_sgd_schedule,
    expected_batch_sizes,
    functional_per_sample,
    private_gradient,
    sequential_step,
    taps_cover,
)
from fedge.runtimes.setup import Setup, prepare
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer

opacus = pytest.importorskip("opacus")
from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402

TINY = {"data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1}}
Trainer = type[SequentialTrainer] | type[BatchedTrainer]


def digits(model: str = "lenet5", **train: object) -> tuple[ExperimentConfig, Setup]:
    config = build(ExperimentConfig, {**TINY, "train": {"epochs": 1, "model": model, **train}})
    return config, prepare(config)


def opacus_per_sample(model: FlatModel, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Opacus's per-sample gradients [B, d] of the module at `params`, flattened in the FlatModel order."""
    module = copy.deepcopy(model.module)
    for s, p in zip(model.slices, module.parameters(), strict=True):
        p.data = params[s.start:s.stop].view(s.shape).clone()
        p.requires_grad_(True)
    wrapped = GradSampleModule(module)
    F.cross_entropy(wrapped(x), y).backward()
    return torch.cat([p.grad_sample.flatten(1) for p in module.parameters()], dim=1)


def opacus_step(model: FlatModel, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, dp: DPSGD, lr: float,
                expected: int, seed: int, **sgd: float) -> torch.Tensor:
    """The parameters after one step of Opacus's DPOptimizer(SGD) on the batch (x, y), noise from `seed`."""
    module = copy.deepcopy(model.module)
    for s, p in zip(model.slices, module.parameters(), strict=True):
        p.data = params[s.start:s.stop].view(s.shape).clone()
        p.requires_grad_(True)
    wrapped = GradSampleModule(module)
    assert dp.max_grad_norm is not None
    optimizer = DPOptimizer(torch.optim.SGD(module.parameters(), lr=lr, **sgd), noise_multiplier=dp.noise_multiplier,
                            max_grad_norm=dp.max_grad_norm, expected_batch_size=expected,
                            generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    F.cross_entropy(wrapped(x), y).backward()
    optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def batch(setup: Setup, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    device = setup.data.devices[0]
    return device.x_train[:size], device.y_train[:size]


def taps_per_sample(trainer: SequentialTrainer, params: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> PerSample:
    replica = trainer.replicas[0]
    replica.work.copy_(params)
    taps = LayerTaps(replica.module, trainer.model)
    with taps.active():
        found = taps.per_sample(x, y)
    assert found is not None
    return found[0]


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_per_sample_gradients_equal_opacus(model: str) -> None:
    config, setup = digits(model)
    params = setup.initial + 0.05 * torch.randn(setup.model.dim, generator=torch.Generator().manual_seed(0))
    x, y = batch(setup)
    reference = opacus_per_sample(setup.model, params, x, y)
    trainer = SequentialTrainer(setup.model, setup.data.devices, config.train)
    assert taps_cover(setup.model)
    ours = {"hooks": taps_per_sample(trainer, params, x, y).dense()[0],
            "torch.func": functional_per_sample(setup.model, params[None], x[None], y[None])[0].dense()[0]}
    layers = dense_layers(setup.model)
    if model == "mlp":
        assert layers is not None
        ours["dense stack"] = dense_per_sample(layers, params[None], x[None], y[None])[0].dense()[0]
    for name, grads in ours.items():
        torch.testing.assert_close(grads, reference, atol=1e-6, rtol=0, msg=name)


def _one_step(trainer_cls: Trainer, setup: Setup, config: ExperimentConfig, params: torch.Tensor, x: torch.Tensor,
              y: torch.Tensor, dp: DPSGD, expected: int, seed: int) -> torch.Tensor:
    """One DP-SGD step of one device through the trainer's own step on a fixed batch (no Poisson sampling)."""
    generator = torch.Generator().manual_seed(seed)
    if trainer_cls is SequentialTrainer:
        trainer = SequentialTrainer(setup.model, setup.data.devices, config.train)
        replica = trainer.replicas[0]
        replica.work.copy_(params)
        buf = torch.zeros_like(params) if config.train.momentum else None
        taps = LayerTaps(replica.module, setup.model)
        with taps.active():
            sequential_step(trainer, replica, taps, x, y, None, torch.tensor([0]), None, buf, dp,
                            torch.tensor([float(expected)]), Noise(setup.model.slices, 1), generator)
        return replica.work.clone()
    batched = BatchedTrainer(setup.model, setup.data.devices, config.train)
    layers = batched.layers
    grads = (dense_per_sample(layers, params[None], x[None], y[None]) if layers is not None
             else functional_per_sample(setup.model, params[None], x[None], y[None]))[0]
    noise = Noise(setup.model.slices, 1)
    noise.draw(0, dp.std, generator)
    grad = private_gradient(grads, torch.ones(1, len(y)), None, dp, torch.tensor([float(expected)]), noise.values)
    buf = torch.zeros_like(params)[None] if config.train.momentum else None
    ones = torch.ones_like(params)[None]
    return batched._apply(params[None], grad, ones, torch.tensor([0]), None, buf)[0][0]


@pytest.mark.parametrize(("model", "trainer_cls"), [("lenet5", SequentialTrainer), ("mlp", SequentialTrainer),
                                                    ("mlp", BatchedTrainer), ("lenet5", BatchedTrainer)])
def test_one_step_equals_opacus_dp_optimizer(model: str, trainer_cls: Trainer) -> None:
    config, setup = digits(model, momentum=0.9, weight_decay=1e-3)
    params = setup.initial.clone()
    x, y = batch(setup, 16)
    norms = opacus_per_sample(setup.model, params, x, y).norm(dim=1)
    dp = DPSGD(noise_multiplier=1.3, max_grad_norm=float(norms.median()))  # clips about half the samples
    expected = 16
    reference = opacus_step(setup.model, params, x, y, dp, config.train.lr, expected, seed=7,
                            momentum=0.9, weight_decay=1e-3)
    ours = _one_step(trainer_cls, setup, config, params, x, y, dp, expected, seed=7)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    assert not torch.equal(ours, params)


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_clipped_per_sample_gradients_never_exceed_c(model: str) -> None:
    config, setup = digits(model)
    x, y = batch(setup, 16)
    trainer = SequentialTrainer(setup.model, setup.data.devices, config.train)
    grads = taps_per_sample(trainer, setup.initial, x, y)
    keep = torch.rand(1, setup.model.dim, generator=torch.Generator().manual_seed(2)) < 0.7
    for c in (1e-3, 0.1, 1.0, 10.0):
        for mask in (None, keep):
            singles = torch.eye(len(y))[:, None, :]  # sample b alone: its clipped gradient
            clipped = torch.stack([grads.clipped_sum(c, single, mask)[0] for single in singles])
            if mask is not None:
                clipped = clipped * mask
            assert float(clipped.norm(dim=1).max()) <= c * (1 + 1e-6)
    dense = grads.dense()[0]
    assert float(dense.norm(dim=1).min()) > 1e-3  # the smallest C above does clip every sample
    # masked before clipping: the factored norms equal those of the masked per-sample gradients
    valid = torch.ones(1, len(y))
    torch.testing.assert_close(grads.clipped_sum(0.1, valid, keep)[0] * keep[0],
                               clip_rows(dense * keep, 0.1)[0].sum(0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("trainer_cls", [SequentialTrainer, BatchedTrainer])
def test_pruned_coordinates_stay_zero_and_get_no_noise(trainer_cls: Trainer) -> None:
    config, setup = digits("mlp" if trainer_cls is BatchedTrainer else "lenet5")
    n, d = len(setup.data.devices), setup.model.dim
    masks = torch.rand(n, d, generator=torch.Generator().manual_seed(0)) < 0.5
    bank = setup.initial.expand(n, d).clone() * masks
    trained = bank.clone()
    trainer_cls(setup.model, setup.data.devices, config.train).train_all(
        trained, masks, torch.zeros_like(bank), torch.arange(n), None,
        Streams(1).device_generators("train", torch.arange(n), 1), dp=DPSGD(5.0, 1.0))
    assert bool((trained[~masks] == 0).all())
    assert bool((trained[masks] != bank[masks]).float().mean() > 0.99)  # the noise moved every kept coordinate
    noise = torch.randn(1, d)
    grads = PerSample(d)  # an empty batch: noise only
    assert bool((private_gradient(grads, torch.ones(1, 0), masks[:1], DPSGD(5.0, 1.0), torch.ones(1), noise)
                 [~masks[:1]] == 0).all())


@pytest.mark.parametrize(("model", "trainer_cls"), [("lenet5", SequentialTrainer), ("mlp", BatchedTrainer),
                                                    ("mlp", SequentialTrainer)])
def test_no_noise_no_clipping_is_bitwise_the_non_dp_path(model: str, trainer_cls: Trainer) -> None:
    config, setup = digits(model, momentum=0.9, weight_decay=1e-3)
    n, d = len(setup.data.devices), setup.model.dim
    masks = torch.rand(n, d, generator=torch.Generator().manual_seed(0)) < 0.6
    references = torch.randn(n, d, generator=torch.Generator().manual_seed(1)) * 0.01

    def penalty(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return 0.1 * (x - references[ids])

    results = []
    for dp in (None, DPSGD(0.0, None)):
        bank, momentum = setup.initial.expand(n, d).clone() * masks, torch.zeros(n, d)
        order = torch.tensor([3, 0, 5, 1])
        losses = trainer_cls(setup.model, setup.data.devices, config.train).train_all(
            bank, masks, momentum, order, penalty, Streams(2).device_generators("train", order, 1), dp=dp)
        results.append((bank, momentum, losses))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_schedule_and_expected_batch_size_equal_opacus() -> None:
    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    sizes, batch_size, epochs = [1, 10, 32, 33, 100, 1568, 2945], 32, 3
    rates, steps = dp_sgd_schedule(sizes, epochs, batch_size)
    expected = expected_batch_sizes(sizes, batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, n in enumerate(sizes):
            loader = DataLoader(TensorDataset(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long)), batch_size=32)
            private = DPDataLoader.from_data_loader(loader)
            assert float(rates[k]) == private.sample_rate
            assert int(steps[k]) == epochs * len(private)
            module = nn.Linear(2, 2)
            _, optimizer, _ = PrivacyEngine().make_private(
                module=module, optimizer=torch.optim.SGD(module.parameters(), lr=0.1), data_loader=loader,
                noise_multiplier=1.0, max_grad_norm=1.0)
            # make_private divides by int(n / len(loader)) in floats: int(1568 * (1/49)) = 31 and, for 2945, 2945 / 92
            # (the rounded step count) = 32; fedge divides in integers, n // ceil(n / B): 32 and 31
            if n not in (1568, 2945):
                assert float(expected[k]) == optimizer.expected_batch_size
    assert int(steps[sizes.index(2945)]) == epochs * 92  # 93 batches, but Opacus's int(1 / (1/93)) is 92
    assert dp_sgd_schedule([0], 2, 32)[1].tolist() == [0]


def test_poisson_batches_are_opacus_sampler_batches() -> None:
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    sizes, steps, rates = [37, 0, 100, 5], [6, 0, 4, 3], [0.25, 0.0, 0.1, 0.5]
    plan = poisson_plan(sizes, steps, rates, [torch.Generator().manual_seed(k) for k in range(4)])
    for row, (n, count, rate) in enumerate(zip(sizes, steps, rates, strict=True)):
        if n:
            sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=rate, steps=count,
                                                    generator=torch.Generator().manual_seed(row))
            assert [plan.batch(row, step).tolist() for step in range(count)] == list(sampler)
    for step in range(3):
        padded = plan.padded(torch.tensor([3, 0, 2]), step)
        for k, row in enumerate((3, 0, 2)):
            batch = plan.batch(row, step)
            assert padded[k, :len(batch)].tolist() == batch.tolist() and bool((padded[k, len(batch):] == -1).all())


@pytest.mark.parametrize(("model", "trainer_cls"), [("lenet5", SequentialTrainer), ("mlp", BatchedTrainer)])
def test_a_device_trains_the_same_whoever_else_trains(model: str, trainer_cls: Trainer) -> None:
    config, setup = digits(model)
    n = len(setup.data.devices)
    dp = DPSGD(1.0, 1.0)
    trainer = trainer_cls(setup.model, setup.data.devices, config.train)
    masks = torch.ones(n, setup.model.dim, dtype=torch.bool)
    everyone = setup.initial.expand(n, -1).clone()
    all_losses = trainer.train_all(everyone, masks, None, torch.arange(n), None,
                                   Streams(5).device_generators("train", torch.arange(n), 2), dp=dp)
    some = setup.initial.expand(n, -1).clone()
    subset = torch.tensor([4, 1])
    losses = trainer.train_all(some, masks, None, subset, None,
                               Streams(5).device_generators("train", subset, 2), dp=dp)
    assert torch.equal(some[[4, 1]], everyone[[4, 1]])
    assert torch.equal(losses, all_losses[[4, 1]])


def test_dp_sgd_on_device_threads_equals_one_thread() -> None:
    config, setup = digits("lenet5", momentum=0.9)
    n = len(setup.data.devices)
    results = []
    for workers in (1, 2):
        bank, momentum = setup.initial.expand(n, -1).clone(), torch.zeros(n, setup.model.dim)
        with intra_op_threads(1):  # as the runtime runs small models (trainer.run_threads)
            losses = SequentialTrainer(setup.model, setup.data.devices, config.train, workers=workers).train_all(
                bank, torch.ones_like(bank, dtype=torch.bool), momentum, torch.arange(n), None,
                Streams(4).device_generators("train", torch.arange(n), 1), dp=DPSGD(1.0, 1.0))
        results.append((bank, momentum, losses))
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_sequential_and_batched_dp_sgd_agree(model: str) -> None:
    """Same draws, same update rule: hooks vs vmap over devices and samples (LeNet-5), hooks vs the dense-stack
    backward (MLP), with momentum, weight decay, masks and a penalty."""
    config, setup = digits(model, momentum=0.9, weight_decay=1e-3)
    n, d = len(setup.data.devices), setup.model.dim
    masks = torch.rand(n, d, generator=torch.Generator().manual_seed(0)) < 0.6
    masks[1] = True
    references = torch.randn(n, d, generator=torch.Generator().manual_seed(1)) * 0.01

    def penalty(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return 0.1 * (x - references[ids])

    results = []
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        bank, momentum = setup.initial.expand(n, -1).clone() * masks, torch.zeros(n, d)
        order = torch.tensor([4, 1, 0, 5, 2])
        losses = trainer_cls(setup.model, setup.data.devices, config.train).train_all(
            bank, masks, momentum, order, penalty, Streams(1).device_generators("train", order, 1),
            dp=DPSGD(1.0, 0.5))
        assert bool((bank[~masks] == 0).all())
        results.append((bank, momentum, losses))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_layers_the_hooks_cannot_read_fall_back_to_torch_func() -> None:
    """An in-place ReLU rewrites the recorded linear output: the step falls back to vmap and still equals Opacus's
    step on the same network with a plain ReLU."""
    config, setup = digits("mlp")
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, 10))
    model = FlatModel(module)
    params = model.initial_vector()
    x, y = batch(setup, 16)
    dp = DPSGD(0.7, 0.05)
    swapped = Setup(setup.data, model, params)
    ours = _one_step(SequentialTrainer, swapped, config, params, x, y, dp, 16, seed=3)
    plain = FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))  # Opacus's hooks
    torch.testing.assert_close(ours, opacus_step(plain, params, x, y, dp, config.train.lr, 16, seed=3),  # refuse it
                               atol=1e-6, rtol=0)
    trainer = SequentialTrainer(model, setup.data.devices, config.train)
    taps = LayerTaps(trainer.replicas[0].module, model)
    with taps.active():
        assert taps.per_sample(x, y) is None


def test_batch_norm_is_refused_and_bad_settings_rejected() -> None:
    config, setup = digits("mlp")
    model = FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)))
    n = len(setup.data.devices)
    bank = model.initial_vector().expand(n, -1).clone()
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        trainer = trainer_cls(model, setup.data.devices, config.train)
        for dp in (DPSGD(1.0, 1.0), DPSGD(0.0, None)):  # refused whatever σ and C
            with pytest.raises(ConfigError, match="^privacy.mechanism: dp-sgd cannot train mlp: it has batch norm"):
                trainer.train_all(bank, torch.ones_like(bank, dtype=torch.bool), None, torch.arange(n), None,
                                  Streams(1).device_generators("train", torch.arange(n), 1), dp=dp)
    for sigma, c in ((-1.0, 1.0), (1.0, 0.0), (1.0, None)):
        with pytest.raises(ValueError):
            DPSGD(sigma, c)
