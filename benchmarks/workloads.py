"""The benchmark workloads: the same devices and data for fedge, the bare PyTorch loop and Flower.

LeNet-5 workloads use *synthetic inputs, throughput only*: Fashion-MNIST-shaped tensors ([1, 28, 28] in [0, 1),
10 classes) generated deterministically per client from (seed, client id), so every contender (including Flower's
separate client processes) trains on exactly the same samples without any shared files. Accuracy on them means
nothing; only samples per second are measured. The MLP workloads use FedProx's Synthetic(1, 1) benchmark
(`fedge.data.synthetic`, Li et al. MLSys 2020), which is a real benchmark dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedge.config import build
from fedge.data.federated import DeviceData, FederatedData
from fedge.experiment import ExperimentConfig

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
BATCH_SIZE = 32
LR = 0.05
LABEL = "synthetic Fashion-MNIST-shaped inputs, throughput only"


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: a model on `clients` devices (per-device sizes fixed or drawn by Synthetic(1,1))."""

    name: str
    model: str  # "lenet5" or "mlp"
    clients: int
    samples: int  # per client for lenet5; 0 for synthetic (heavy-tailed sizes from the generator)
    algorithms: tuple[str, ...]
    baselines: tuple[str, ...] = ("bare", "flower")
    data_label: str = LABEL
    extra: dict[str, object] = field(default_factory=dict)


def standard_workloads(scale: float = 1.0) -> list[Workload]:
    """The issue's workloads; `scale` < 1 shrinks the device counts (not the samples per device) for quick runs."""

    def n(value: int, floor: int) -> int:
        return max(floor, int(round(value * scale)))

    return [
        Workload(f"lenet5-{n(100, 2)}x600", "lenet5", n(100, 2), 600, ("fedavg", "dfl", "dpmn")),
        Workload(f"lenet5-{n(500, 2)}x64", "lenet5", n(500, 2), 64, ("fedavg", "dfl", "dpmn")),
        Workload(f"mlp-synthetic-{n(1000, 4)}", "mlp", n(1000, 4), 0, ("dpmn",), baselines=(),
                 data_label="Synthetic(1,1) (FedProx)"),
        Workload(f"mlp-synthetic-{n(10000, 8)}", "mlp", n(10000, 8), 0, ("dpmn",), baselines=(),
                 data_label="Synthetic(1,1) (FedProx)"),
    ]


def client_tensors(seed: int, client: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client `client`'s deterministic synthetic (x [samples, 1, 28, 28], y [samples]) for the LeNet workloads."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + client)
    x = torch.rand((samples, *INPUT_SHAPE), generator=g)
    y = torch.randint(0, NUM_CLASSES, (samples,), generator=g)
    return x, y


def held_out_size(samples: int) -> int:
    return max(1, samples // 10)


def train_tensors(seed: int, client: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training part of client `client`'s data: the samples fedge's devices train on."""
    x, y = client_tensors(seed, client, samples + 2 * held_out_size(samples))
    return x[:samples], y[:samples]


def lenet_federation(workload: Workload, seed: int) -> FederatedData:
    """Every client's `samples` training samples, plus a tenth of that as validation and as test data."""
    devices = []
    held_out = held_out_size(workload.samples)
    for client in range(workload.clients):
        x, y = client_tensors(seed, client, workload.samples + 2 * held_out)
        s = workload.samples
        devices.append(DeviceData(x[:s], y[:s], x[s:s + held_out], y[s:s + held_out], x[s + held_out:],
                                  y[s + held_out:]))
    return FederatedData("synthetic-fmnist-shaped", devices, NUM_CLASSES, INPUT_SHAPE)


def experiment(workload: Workload, algorithm: str, rounds: int, seed: int, threads: int,
               batched: str = "auto") -> ExperimentConfig:
    """The fedge config of `workload`: 1 local epoch, batch 32, evaluation every round (its cost is included)."""
    data: dict[str, object] = {"devices": workload.clients}
    if workload.model == "mlp":
        data.update({"dataset": "synthetic", "partition": "iid", "synthetic_alpha": 1.0, "synthetic_beta": 1.0})
    return build(ExperimentConfig, {
        "algorithms": [algorithm], "rounds": rounds, "seed": seed, "eval_every": 1, "data": data,
        "train": {"model": workload.model, "epochs": 1, "batch_size": BATCH_SIZE, "lr": LR, "batched": batched,
                  "threads": threads},
        "pruning": {"target_density": 0.5, "ramp_rounds": 3},
        "neighbours": {"delta": 0.2, "k_min": 1, "k_max": 4},
    })
