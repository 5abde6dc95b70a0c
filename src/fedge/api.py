"""fedge as a library: build a config, register your own algorithm, dataset or model, run.

    import fedge
    config = fedge.configure(algorithms=["dpmn", "dfl"], rounds=10)
    results = fedge.run(config)                   # {"dpmn": RunResult, "dfl": RunResult}, nothing written
    results["dpmn"].summary["accuracy_mean"]

`configure(**sections)` builds an `ExperimentConfig` strictly (unknown keys and bad values are `ConfigError`s, as
on the command line). `run(config, out)` runs every algorithm of the config on one shared data/model setup and,
with `out`, writes each one's run folder under `out/<algorithm>/` as `fedge run` does. `Simulation` steps one
algorithm round by round. Algorithms are compositions of components (`Algorithm`, `Pruner`, `Selector`,
`Combiner`, `Sampler` and the built-in ones re-exported here); register a builder with `register_algorithm`,
a dataset loader with `register_dataset`, a model constructor with `register_model`. docs/extending.md shows each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedge.algorithms import ALGORITHMS, Algorithm, Combiner, Component, Pruner, Sampler, Selector
from fedge.algorithms.components.combining import (
    ClientSampling,
    NeighbourAveraging,
    NeighbourRegularizer,
    ServerAveraging,
)
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.components.selection import FixedTopology, RandomLikeSelection, SimilaritySelection
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.config import ConfigError, build
from fedge.data import DATASETS, ArrayDataset
from fedge.experiment import ExperimentConfig
from fedge.messaging import Inbox
from fedge.models import MODELS
from fedge.runfolder import RunResult
from fedge.runtimes.setup import prepare
from fedge.runtimes.simulator import Simulation, simulate

register_algorithm = ALGORITHMS.register  # @register_algorithm("name", "description") over builder(config)
register_dataset = DATASETS.register  # @register_dataset("name", ...) over loader(data_dir, data_config)
register_model = MODELS.register  # @register_model("name", ...) over constructor(input_shape, num_classes)


def configure(**sections: Any) -> ExperimentConfig:
    """An `ExperimentConfig` from keyword sections, e.g. `configure(rounds=5, data={"devices": 10})`."""
    return build(ExperimentConfig, sections)


def run(config: ExperimentConfig, out: str | Path | None = None) -> dict[str, RunResult]:
    """Run every algorithm of `config` (one shared setup); with `out`, write `out/<algorithm>/` run folders."""
    ALGORITHMS.check(config.algorithms, "algorithms")
    setup = prepare(config)
    folder = Path(out) if out is not None else None
    return {name: simulate(config, name, folder / name if folder else None, setup=setup)
            for name in config.algorithms}


__all__ = ["ALGORITHMS", "DATASETS", "MODELS", "AdaptivePruner", "Algorithm", "ArrayDataset", "ClientSampling",
           "Combiner", "Component", "ConfigError", "DeviceState", "EdgeCloudAveraging", "ExperimentConfig",
           "FixedTopology", "Inbox", "NeighbourAveraging", "NeighbourRegularizer", "Pruner", "RandomLikeSelection",
           "Round", "RunContext", "RunResult", "Sampler", "Selector", "ServerAveraging", "SimilaritySelection",
           "Simulation", "configure", "register_algorithm", "register_dataset", "register_model", "run",
           "simulate"]
