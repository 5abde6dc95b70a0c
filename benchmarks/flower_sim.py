"""Flower's simulation engine (Ray backend, FedAvg, one CPU per client) on the LeNet-5 workload.

Run by `benchmarks.run` in a subprocess with a Python that has the optional `flwr[simulation]` extra:

    python -m benchmarks.flower_sim --clients 500 --samples 64 --rounds 3 --seed 0

Each client trains exactly as the bare loop does (`benchmarks.bare`: nn.Module + torch.optim.SGD, batch 32, one
epoch, one intra-op thread) on the same deterministic samples (`benchmarks.workloads.train_tensors`). The time of a
round runs from the strategy's `configure_fit` to the end of its `aggregate_fit` (dispatch, client training,
serialisation, aggregation; evaluation is switched off, which only flatters Flower). Round 1 includes starting the
Ray actors and is reported separately. Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.workloads import BATCH_SIZE, LR, train_tensors
from fedge.models.vision import lenet5

TIMES: list[tuple[float, float]] = []


def _train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for first in range(0, len(y), BATCH_SIZE):
        batch = order[first:first + BATCH_SIZE]
        optimizer.zero_grad()
        F.cross_entropy(net(x[batch]), y[batch]).backward()
        optimizer.step()


def run(clients: int, samples: int, rounds: int, seed: int) -> dict[str, Any]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    class LeNetClient(NumPyClient):
        def __init__(self, client: int) -> None:
            self.client = client
            self.net = lenet5((1, 28, 28), 10)
            self.x, self.y = train_tensors(seed, client, samples)

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            with torch.no_grad():
                for p, w in zip(self.net.parameters(), parameters):
                    p.copy_(torch.from_numpy(w))
            _train(self.net, self.x, self.y, seed + self.client)
            return [p.detach().numpy().copy() for p in self.net.parameters()], len(self.y), {}

    def client_fn(context: Context) -> Any:
        torch.set_num_threads(1)
        return LeNetClient(int(context.node_config["partition-id"])).to_client()

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            TIMES.append((time.perf_counter(), float("nan")))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            TIMES[-1] = (TIMES[-1][0], time.perf_counter())
            return out

    torch.manual_seed(seed)
    initial = [p.detach().numpy().copy() for p in lenet5((1, 28, 28), 10).parameters()]
    strategy = TimedFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                           min_available_clients=clients, initial_parameters=ndarrays_to_parameters(initial))

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    started = time.perf_counter()
    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn), num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    total = time.perf_counter() - started
    durations = [end - start for start, end in TIMES]
    measured = durations[1:] if len(durations) > 1 else durations
    import flwr

    return {
        "flwr_version": flwr.__version__,
        "round_seconds": durations,
        "samples_per_s": len(measured) * clients * samples / sum(measured) if measured else float("nan"),
        "samples_per_s_first_round": clients * samples / durations[0] if durations else float("nan"),
        "wall_seconds_including_startup": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.clients, args.samples, args.rounds, args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
