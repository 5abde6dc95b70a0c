"""The round loop: pruning invariants, determinism, trainer equivalence, client-server traffic."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fedge.algorithms import ALGORITHMS
from fedge.config import build
from fedge.core import codec
from fedge.core.streams import Streams
from fedge.experiment import ExperimentConfig
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import Simulation, simulate
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer

TINY = {"rounds": 3, "data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1},
        "pruning": {"ramp_rounds": 2}, "neighbours": {"k_max": 2, "bootstrap_probes": 3}}


def tiny(**changes: object) -> ExperimentConfig:
    raw = {**TINY, **changes}
    return build(ExperimentConfig, raw)


def shuffles(n: int) -> list[torch.Generator]:
    return Streams(1).device_generators("train", torch.arange(n), 1)


def test_pruned_coordinates_stay_zero_and_density_reaches_target() -> None:
    config = tiny(rounds=4, pruning={"ramp_rounds": 2, "tolerance": 1.0})  # never pause: exact schedule
    sim = Simulation.build(config, "dpmn")
    while not sim.done:
        sim.step()
        devices = sim.fed.devices
        assert bool((devices.bank[~devices.masks] == 0).all())
    kept = sim.fed.devices.masks[:, sim.ctx.prunable].float().mean(dim=1)
    assert torch.allclose(kept, torch.full_like(kept, 0.5), atol=0.01)


def test_training_never_moves_pruned_coordinates() -> None:
    config = tiny()
    setup = prepare(config)
    n, d = config.data.devices, setup.model.dim
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, d, generator=g) < 0.5
    bank = setup.initial.expand(n, d).clone() * masks
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        trained = bank.clone()
        trainer_cls(setup.model, setup.data.devices, config.train).train_all(
            trained, masks, None, torch.arange(n), None, shuffles(n))
        assert bool((trained[~masks] == 0).all())
        assert not torch.equal(trained[masks], bank[masks])


def test_sequential_and_batched_trainers_agree() -> None:
    config = tiny()
    setup = prepare(config)
    n = config.data.devices
    results = []
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        bank = setup.initial.expand(n, -1).clone()
        masks = torch.ones_like(bank, dtype=torch.bool)
        trainer = trainer_cls(setup.model, setup.data.devices, config.train)
        losses = trainer.train_all(bank, masks, None, torch.arange(n), None, shuffles(n))
        results.append((bank, losses, trainer.evaluate_all(bank)[0]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def test_a_device_trains_the_same_whoever_else_trains() -> None:
    """Minibatches come from each device's own stream: training a subset gives those devices the same result."""
    config = tiny()
    setup = prepare(config)
    n = config.data.devices
    generators = Streams(5).device_generators("train", torch.arange(n), 2)
    everyone = setup.initial.expand(n, -1).clone()
    trainer = SequentialTrainer(setup.model, setup.data.devices, config.train)
    masks = torch.ones_like(everyone, dtype=torch.bool)
    trainer.train_all(everyone, masks, None, torch.arange(n), None, generators)
    some = setup.initial.expand(n, -1).clone()
    trainer.train_all(some, masks, None, torch.tensor([4, 1]), None,
                      Streams(5).device_generators("train", torch.tensor([4, 1]), 2))
    assert torch.equal(some[[1, 4]], everyone[[1, 4]])


def test_bitwise_determinism_for_every_algorithm() -> None:
    config = tiny(rounds=2)
    for name in ALGORITHMS:
        first = simulate(config, name, None)
        second = simulate(config, name, None)
        assert first.history == second.history, name
        assert torch.equal(first.state.devices.bank, second.state.devices.bank), name


def test_fedavg_downloads_only_stale_models_and_serves_the_global_one() -> None:
    config = tiny(rounds=2)
    result = simulate(config, "fedavg", None)
    d = result.summary["model_parameters"]
    message = codec.framed(codec.encoded_size(d, d, sparse=False))
    first, second = result.history
    n = config.data.devices
    assert first["bytes_round"] == n * message  # everyone holds x0: uploads only
    assert second["bytes_round"] == 2 * n * message  # download of round 1's global model, then uploads
    assert first["bytes_by_link"]["device-server"] == first["bytes_total"]
    server = result.state.algorithm.combiner
    assert server.version == 2
    served = server.served(result.state.devices, result.extra["context"], None)
    assert torch.equal(served, server.model.expand(n, -1))


def test_summary_records_config_environment_and_ledger(tmp_path: Path) -> None:
    result = simulate(tiny(rounds=1), "dpmn", tmp_path / "dpmn")
    written = json.loads((tmp_path / "dpmn" / "summary.json").read_text())
    assert written["environment"]["torch"] == torch.__version__
    assert written["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert written["config"]["rounds"] == 1 and (tmp_path / "dpmn" / "config.yaml").exists()
    assert sum(written["bytes_by_link"].values()) == written["bytes_total"] == result.summary["bytes_total"]
    assert written["bytes_by_kind"]["request"] > 0 and written["bytes_by_kind"]["probe"] > 0
    assert not any(key.startswith("_") for key in written)
