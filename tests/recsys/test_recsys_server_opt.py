"""Server optimisers (FedOpt, Reddi et al. 2021): sgd lr 1 is plain averaging; adaptive ones move only used rows."""

from __future__ import annotations

import pytest
import torch

from fedge.config import ConfigError
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.runner import prepare
from fedge.recsys.server_opt import ServerOptimizer
from fedge.recsys.wire import aggregate


def shared_model() -> dict[str, torch.Tensor]:
    return {"item": torch.arange(8.0).reshape(4, 2), "mu": torch.tensor([0.5])}


def test_sgd_with_lr_one_and_no_momentum_is_plain_averaging() -> None:
    shared = shared_model()
    delta = torch.tensor([[1.0, -2.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    count = torch.tensor([2.0, 0.0, 1.0, 0.0])
    ServerOptimizer("sgd", 1.0).step(shared, delta, count, {"mu": torch.tensor([0.25])})
    assert torch.equal(shared["item"], shared_model()["item"] + delta)
    assert torch.equal(shared["mu"], torch.tensor([0.75]))


def test_adam_first_step_and_lazy_rows() -> None:
    shared = shared_model()
    opt = ServerOptimizer("adam", 0.1, beta1=0.9, beta2=0.99, eps=1e-3)
    delta = torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.5, 4.0], [7.0, 7.0]])
    count = torch.tensor([2.0, 0.0, 1.0, 0.0])  # row 3 has a delta but nobody uploaded it: must not move
    opt.step(shared, delta, count, {"mu": torch.tensor([0.2])})
    d = delta[[0, 2]]
    expected = 0.1 * (0.1 * d) / ((0.01 * d * d).sqrt() + 1e-3)  # Reddi et al. Alg. 2, no bias correction
    assert torch.allclose(shared["item"][[0, 2]] - shared_model()["item"][[0, 2]], expected)
    assert torch.equal(shared["item"][[1, 3]], shared_model()["item"][[1, 3]])
    assert torch.equal(opt.m["item"][[1, 3]], torch.zeros(2, 2)) and torch.equal(opt.v["item"][3], torch.zeros(2))
    assert not torch.equal(shared["mu"], torch.tensor([0.5]))


def test_momentum_accumulates_only_on_used_rows() -> None:
    shared = shared_model()
    opt = ServerOptimizer("sgd", 1.0, momentum=0.5)
    delta = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    for count in (torch.tensor([1.0, 0, 0, 0]), torch.tensor([1.0, 0, 0, 0])):
        opt.step(shared, delta, count, {})
    # step 1: +1; step 2: +(0.5 * 1 + 1) = +1.5
    assert torch.equal(shared["item"][0], shared_model()["item"][0] + 2.5)
    assert torch.equal(shared["item"][1:], shared_model()["item"][1:])


@pytest.mark.parametrize("kind", ["adagrad", "adam", "yogi"])
def test_fedmf_round_with_adaptive_server_moves_only_touched_items(kind, tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path, train__server_optimizer=kind, train__server_lr=0.05)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create("fedmf", Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    before = state.shared["item"].clone()
    uploads = algo.client_round(state, torch.tensor([0, 1]), 1)
    algo.server_aggregate(state, uploads, 1)
    touched = torch.zeros(data.num_items, dtype=torch.bool)
    touched[uploads.pair_item] = True
    assert torch.equal(state.shared["item"][~touched], before[~touched])
    moved = (state.shared["item"][touched] - before[touched]).abs()
    assert moved.max() <= 0.05 * (1 - 0.9) / (1 - 0.99) ** 0.5 * 1.0001  # adaptive step is bounded by the lr


def test_fedmf_sgd_server_equals_adding_the_average(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create("fedmf", Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in state.shared.items()}
    uploads = algo.client_round(state, torch.arange(data.num_users), 1)
    average = aggregate(uploads)
    algo.server_aggregate(state, uploads, 1)
    assert torch.allclose(state.shared["item"], before["item"] + average.item_mean)
    assert torch.allclose(state.shared["mu"], before["mu"] + average.dense_mean["mu"])


def test_bad_server_settings_are_config_errors(tiny_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match="server_optimizer"):
        tiny_config(tmp_path, train__server_optimizer="lamb")
    with pytest.raises(ConfigError, match="server_momentum"):
        tiny_config(tmp_path, train__server_momentum=1.0)
