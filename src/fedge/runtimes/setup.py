"""Build everything a run needs from its config: data, model layout, context, initial state.

Seeds: the data split, the model initialisation, topologies/bandwidth classes and training shuffles each get their
own generator derived from `config.seed`, so changing one algorithm's random draws never shifts another's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core.topology import build_topology, random_regular
from fedge.data.federated import FederatedData, load_federated
from fedge.experiment import ExperimentConfig
from fedge.models import FlatModel, build_model

DATA_STREAM, MODEL_STREAM, TOPOLOGY_STREAM, TRAIN_STREAM, SELECT_STREAM = range(5)


def stream(seed: int, purpose: int) -> torch.Generator:
    """An independent generator for one purpose of one run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + purpose * 7919 + 17)


@dataclass
class Setup:
    data: FederatedData
    model: FlatModel
    initial: torch.Tensor


def prepare(config: ExperimentConfig, data: FederatedData | None = None) -> Setup:
    """Load data and build the model with its common initialisation x0 (seeded, no global RNG touched)."""
    data = data or load_federated(config.data, stream(config.seed, DATA_STREAM).initial_seed())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(config.seed, MODEL_STREAM).initial_seed())
        module = build_model(config.train.model, data.input_shape, data.num_classes)
    model = FlatModel(module)
    return Setup(data, model, model.initial_vector())


def bandwidth_targets(config: ExperimentConfig, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per-device (target density, k_max): homogeneous, or drawn from the configured bandwidth classes."""
    target = torch.full((n,), config.pruning.target_density)
    k_max = torch.full((n,), config.neighbours.k_max, dtype=torch.long)
    if config.bandwidth_classes:
        order = torch.randperm(n, generator=generator)
        start = 0
        for number, cls in enumerate(config.bandwidth_classes):
            count = n - start if number == len(config.bandwidth_classes) - 1 else int(round(cls.fraction * n))
            members = order[start:start + count]
            target[members] = cls.target_density
            k_max[members] = cls.k_max
            start += count
    return target, k_max


def make_context(config: ExperimentConfig, setup: Setup) -> RunContext:
    n = config.data.devices
    topo_gen = stream(config.seed, TOPOLOGY_STREAM)
    logical = random_regular(n, config.neighbours.k_max, topo_gen)
    physical = build_topology(config.neighbours.topology, n, config.neighbours.topology_degree, topo_gen)
    target, k_max = bandwidth_targets(config, n, topo_gen)
    return RunContext(
        config=config,
        dim=setup.model.dim,
        layer_groups=setup.model.layer_groups(),
        prunable=setup.model.prunable_mask(),
        head=setup.model.head_range(),
        topology=logical,
        physical=physical,
        target_density=target,
        k_max=k_max,
        data_sizes=setup.data.train_sizes,
        val_sizes=torch.tensor([len(d.y_val) for d in setup.data.devices]),
        generator=stream(config.seed, SELECT_STREAM),
    )


def initial_state(config: ExperimentConfig, setup: Setup) -> FederationState:
    return FederationState.create(setup.initial, config.data.devices, momentum=config.train.momentum > 0)
