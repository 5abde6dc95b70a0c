"""What components may read about the run besides the state: configuration, model layout, topology, per-device
targets and the explicit random generator. Built once per run by the runtime."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.experiment import ExperimentConfig


@dataclass
class RunContext:
    config: ExperimentConfig
    dim: int
    layer_groups: list[tuple[int, int]]  # prunable tensors (start, stop)
    prunable: torch.Tensor  # [d] bool
    head: tuple[int, int]  # last layer (start, stop), for similarity sketches
    topology: torch.Tensor  # [N, N] bool: fixed logical topology (dfl, dpmp)
    physical: torch.Tensor  # [N, N] bool: who can reach whom at all (candidate sets)
    target_density: torch.Tensor  # [N] per-device pruning target (bandwidth class)
    k_max: torch.Tensor  # [N] per-device neighbour cap (bandwidth class)
    data_sizes: torch.Tensor  # [N] training samples per device
    val_sizes: torch.Tensor  # [N] local validation samples per device
    generator: torch.Generator
    coordinates: torch.Tensor | None = None  # [N, 2] device positions in the unit square (latency/proximity)
    edge_coordinates: torch.Tensor | None = None  # [K, 2] edge-server (cluster leader) positions
