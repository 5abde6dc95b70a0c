"""A tiny run of the benchmark runner (no timing is asserted: benchmarks are measurements, not tests), and the
trainer equivalence the batched speedup relies on, with every feature of the update rule switched on."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from benchmarks.run import main
from benchmarks.workloads import Workload, experiment, lenet_federation, train_tensors

from fedge.core.streams import Streams
from fedge.runtimes.setup import prepare
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer, choose_batched


def test_runner_writes_ratios_breakdown_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--client-scale", "0.004", "--repeats", "1", "--rounds", "2", "--no-flower", "--out", str(out),
                 "--threads", "1", "--cores", "2",
                 "--only", "lenet5-2x64", "--only", "mlp-synthetic-4"]) == 0
    report = json.loads(out.read_text())
    names = [r["workload"] for r in report["results"]]
    assert names == ["lenet5-2x64", "mlp-synthetic-4"]
    lenet, mlp = report["results"]
    assert set(lenet["ratio_to_limit"]) == {"fedavg", "dfl", "dpmn"}
    for spread in lenet["ratio_to_limit"].values():
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    (bare,) = lenet["bare"]  # one repeat: both configurations of the bare loop, each in fresh processes
    assert set(bare["configurations"]) == {"1 process x 2 threads", "2 processes x 1 thread"}
    assert bare["limit"] == max(c["samples_per_s"] for c in bare["configurations"].values())
    assert lenet["samples_per_s"]["bare-limit"]["median"] == bare["limit"]
    environment = report["environment"]
    assert {"fedge", "torch", "cpu", "cpu_capability", "threads"} <= set(environment)
    assert lenet["flower"] == {"skipped": "--no-flower"}
    for breakdown in (*lenet["breakdown"].values(), *mlp["breakdown"].values()):
        assert sum(breakdown.values()) == pytest.approx(1.0)
        assert breakdown["train"] > 0
    assert lenet["breakdown"]["fedavg"]["select"] == 0.0  # fedavg has no selector
    assert mlp["batched_speedup"]["median"] > 0
    assert mlp["trainer"] == {"dpmn": "batched"} and lenet["trainer"]["fedavg"] == "sequential"
    assert mlp["peak_memory_mb"] > 0


def test_workload_data_is_deterministic_and_shared_with_the_baselines() -> None:
    workload = Workload("w", "lenet5", 3, 40, ("fedavg",))
    first, second = lenet_federation(workload, 0), lenet_federation(workload, 0)
    for a, b in zip(first.devices, second.devices):
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    x, y = train_tensors(0, 1, 40)
    assert torch.equal(x, first.devices[1].x_train) and torch.equal(y, first.devices[1].y_train)
    assert not torch.equal(first.devices[0].x_train, first.devices[1].x_train)


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_trainers_agree_with_momentum_decay_masks_and_penalty(model: str) -> None:
    workload = Workload("w", model, 5, 40 if model == "lenet5" else 0, ("dpmn",))
    config = experiment(workload, "dpmn", 1, 0, 1)
    setup = prepare(config, lenet_federation(workload, 0) if model == "lenet5" else None)
    train = copy.deepcopy(config.train)
    train.momentum, train.weight_decay = 0.9, 1e-3
    n, d = len(setup.data.devices), setup.model.dim
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, d, generator=g) < 0.6
    masks[0] = True  # one dense device (the sequential trainer's unmasked fast path)
    references = torch.randn(n, d, generator=g) * 0.01

    def penalty(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return 0.1 * (x - references[ids])

    results = []
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        bank = setup.initial.expand(n, -1).clone() * masks
        momentum = torch.zeros_like(bank)
        order = torch.tensor([4, 0, 2, 1, 3])
        losses = trainer_cls(setup.model, setup.data.devices, train).train_all(
            bank, masks, momentum, order, penalty, Streams(3).device_generators("train", order, 1))
        assert bool((bank[~masks] == 0).all())
        results.append((bank, momentum, losses))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert choose_batched(setup.model, config.train) == (model == "mlp")
