"""Build everything a run needs from its config: data, model layout, the run context, the devices' initial state.

Randomness comes from named streams (fedge.core.streams) keyed by the seed and a purpose — "data" (partition and
splits), "model" (initialisation x0), "topology" (dfl's k-regular graph), "physical" (reachability), "bandwidth"
(bandwidth classes), "placement" (positions) — and, during rounds, by device id and round ("train", "probe",
"regrow", ...). Everything per device is drawn in device-id order and then laid out in the storage order the
runtime chose (`ids[row]` is the device stored in row `row`), so storage order never changes a device's draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import DeviceState
from fedge.core.streams import Streams, generator
from fedge.core.topology import build_topology, random_regular
from fedge.data.federated import DeviceData, FederatedData, load_federated
from fedge.experiment import ExperimentConfig
from fedge.messaging.transport import Transport
from fedge.models import FlatModel, build_model


@dataclass
class Setup:
    data: FederatedData  # devices in id order
    model: FlatModel
    initial: torch.Tensor


def prepare(config: ExperimentConfig, data: FederatedData | None = None) -> Setup:
    """Load data and build the model with its common initialisation x0 (seeded, no global RNG left changed)."""
    data = data or load_federated(config.data, generator(config.seed, "data").initial_seed())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator(config.seed, "model").initial_seed())
        module = build_model(config.train.model, data.input_shape, data.num_classes)
    model = FlatModel(module)
    return Setup(data, model, model.initial_vector())


def bandwidth_targets(config: ExperimentConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per-device-id (target density, k_max): homogeneous, or drawn from the configured bandwidth classes."""
    target = torch.full((n,), config.pruning.target_density)
    k_max = torch.full((n,), config.neighbours.k_max, dtype=torch.long)
    if config.bandwidth_classes:
        order = torch.randperm(n, generator=gen)
        start = 0
        for number, cls in enumerate(config.bandwidth_classes):
            count = n - start if number == len(config.bandwidth_classes) - 1 else int(round(cls.fraction * n))
            members = order[start:start + count]
            target[members] = cls.target_density
            k_max[members] = cls.k_max
            start += count
    return target, k_max


def placement(config: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, 2] device positions by id, [K, 2] edge-server positions), uniform in the unit square, seeded."""
    gen = generator(config.seed, "placement")
    devices = torch.rand(config.data.devices, 2, generator=gen)
    edges = torch.rand(config.hierarchy.clusters, 2, generator=gen)
    return devices, edges


def storage_order(config: ExperimentConfig, device_order: list[int] | torch.Tensor | None) -> torch.Tensor:
    """[N] device id stored in each row: 0..N-1, or the given permutation."""
    n = config.data.devices
    if device_order is None:
        return torch.arange(n)
    ids = torch.as_tensor(device_order, dtype=torch.long)
    if ids.shape != (n,) or not torch.equal(torch.sort(ids).values, torch.arange(n)):
        raise ValueError(f"device_order must be a permutation of 0..{n - 1}")
    return ids


def stored_devices(setup: Setup, ids: torch.Tensor) -> list[DeviceData]:
    """Each row's data, in storage order."""
    return [setup.data.devices[i] for i in ids.tolist()]


def make_context(config: ExperimentConfig, setup: Setup, transport: Transport, ids: torch.Tensor) -> RunContext:
    n = config.data.devices
    logical = random_regular(n, config.neighbours.k_max, generator(config.seed, "topology"))
    physical = build_topology(config.neighbours.topology, n, config.neighbours.topology_degree,
                              generator(config.seed, "physical"))
    target, k_max = bandwidth_targets(config, n, generator(config.seed, "bandwidth"))
    coordinates, edge_coordinates = placement(config)
    return RunContext(
        dim=setup.model.dim,
        ids=ids,
        layer_groups=setup.model.layer_groups(),
        prunable=setup.model.prunable_mask(),
        head=setup.model.head_range(),
        topology=logical[ids][:, ids],
        physical=physical[ids][:, ids],
        target_density=target[ids],
        k_max=k_max[ids],
        data_sizes=setup.data.train_sizes[ids],
        val_sizes=torch.tensor([len(d.y_val) for d in setup.data.devices])[ids],
        streams=Streams(config.seed),
        transport=transport,
        payload_dtype=config.payload_dtype,
        coordinates=coordinates[ids],
        edge_coordinates=edge_coordinates,
    )


def initial_devices(config: ExperimentConfig, setup: Setup) -> DeviceState:
    return DeviceState.create(setup.initial, config.data.devices, momentum=config.train.momentum > 0)


__all__ = ["Setup", "bandwidth_targets", "initial_devices", "make_context", "placement", "prepare", "storage_order",
           "stored_devices"]
