"""Device-parallel sequential training: results must not depend on how many devices train at once."""

from __future__ import annotations

import pytest
import torch

from fedge.config import build
from fedge.core.streams import Streams
from fedge.experiment import ExperimentConfig
from fedge.runtimes.device_threads import Replica, for_each_on_threads, intra_op_threads
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import simulate
from fedge.runtimes.trainer import SequentialTrainer

TINY = {"rounds": 3, "data": {"devices": 7, "partition": "shards:2"}, "train": {"epochs": 1, "momentum": 0.5},
        "pruning": {"ramp_rounds": 2}, "neighbours": {"k_max": 2, "bootstrap_probes": 3}}


def test_many_workers_give_bitwise_the_single_thread_result() -> None:
    config = build(ExperimentConfig, TINY)
    setup = prepare(config)
    n, d = config.data.devices, setup.model.dim
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, d, generator=g) < 0.6
    masks[2] = True
    references = torch.randn(n, d, generator=g) * 0.01

    def penalty(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return 0.1 * (x - references[ids])

    results = []
    for workers in (1, 3):
        bank = setup.initial.expand(n, -1).clone() * masks
        momentum = torch.zeros_like(bank)
        trainer = SequentialTrainer(setup.model, setup.data.devices, config.train, workers=workers)
        with intra_op_threads(1):
            order = torch.tensor([5, 0, 6, 2, 1, 4, 3])
            losses = trainer.train_all(bank, masks, momentum, order, penalty,
                                       Streams(3).device_generators("train", order, 1))
            accuracy, loss = trainer.evaluate_all(bank, "val")
        results.append((bank, momentum, losses, accuracy, loss))
    assert not torch.equal(results[0][0], setup.initial.expand(n, -1) * masks)  # it trained
    for single, threaded in zip(*results, strict=True):
        assert torch.equal(single, threaded)


def test_simulation_metrics_do_not_depend_on_threads() -> None:
    summaries = [simulate(build(ExperimentConfig, {**TINY, "train": {**TINY["train"], "threads": t}}), "dpmn", None)
                 for t in (1, 2)]
    assert summaries[0].history == summaries[1].history


def test_an_error_in_a_worker_reaches_the_caller_and_threads_are_restored() -> None:
    config = build(ExperimentConfig, TINY)
    replicas = [Replica(prepare(config).model) for _ in range(2)]
    before = torch.get_num_threads()
    seen: list[int] = []

    def work(_replica: Replica, item: int) -> None:
        seen.append(item)
        if item == 3:
            raise ValueError("device 3 failed")

    with pytest.raises(ValueError, match="device 3 failed"):
        for_each_on_threads(list(range(6)), work, replicas)
    assert 3 in seen
    assert torch.get_num_threads() == before
