"""`val_accuracy_mean`: every evaluation round's mean accuracy on the devices' own validation splits, of the same
models as the test accuracy (issue 17: what tuning reads), also in the summary."""

from __future__ import annotations

import math

import pytest
import torch

from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.runtimes.simulator import Simulation, simulate


def _config(algorithm: str, **data: object) -> ExperimentConfig:
    return build(ExperimentConfig, {"algorithms": [algorithm], "rounds": 3, "eval_every": 2, "seed": 3,
                                    "data": {"devices": 6, **data}, "train": {"epochs": 1}})


def _val_mean(sim: Simulation, models: torch.Tensor) -> float:
    accuracy = sim.trainer.evaluate_all(models, "val")[0]
    return float(accuracy[~accuracy.isnan()].mean())


@pytest.mark.parametrize("algorithm", ["dpmn", "dfl", "fedavg"])
def test_val_accuracy_is_that_of_the_evaluated_models(algorithm: str) -> None:
    config = _config(algorithm)
    sim = Simulation.build(config, algorithm)
    while not sim.done:
        metrics = sim.step()
        evaluated = sim.fed.round == config.rounds or sim.fed.round % config.eval_every == 0
        assert ("val_accuracy_mean" in metrics) == evaluated == ("accuracy_mean" in metrics)
    # the last round's metric is the mean over devices of the served models' validation accuracy
    served = sim.fed.algorithm.combiner.served(sim.fed.devices, sim.ctx, None)  # type: ignore[arg-type]
    models = sim.fed.devices.bank if served is None else served
    assert metrics["val_accuracy_mean"] == pytest.approx(_val_mean(sim, models), abs=1e-6)
    assert 0.0 <= metrics["val_accuracy_mean"] <= 1.0


def test_summary_carries_val_accuracy_and_runs_repeat_exactly() -> None:
    config = _config("dpmn")
    first, second = simulate(config, "dpmn", None), simulate(config, "dpmn", None)
    assert first.summary["val_accuracy_mean"] == first.history[-1]["val_accuracy_mean"]
    assert first.history == second.history  # the extra evaluation draws no randomness


def test_no_validation_split_gives_null() -> None:
    result = simulate(_config("local", val_fraction=0.0), "local", None)
    assert result.summary["val_accuracy_mean"] is None
    assert result.summary["accuracy_mean"] is not None and math.isfinite(result.summary["accuracy_mean"])
