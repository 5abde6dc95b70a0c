"""Flower's simulation engine (Ray backend, FedAvg, one CPU per client) on the LeNet-5 workload.

Run by `benchmarks.run` in a subprocess with a Python that has the optional `flwr[simulation]` extra:

    python -m benchmarks.flower_sim --clients 500 --samples 64 --rounds 3 --seed 0

Each client trains exactly as the bare loop does (`benchmarks.bare`: nn.Module + torch.optim.SGD, batch 32, one
epoch, one intra-op thread) on the same deterministic samples (`benchmarks.workloads.train_tensors`). A client's
model and data are built once per Ray worker, on the client's first call there, and kept (`benchmarks.flower_client`):
what Flower's `Context.state` is for, without serialising the samples into records each round.
`client_builds_by_round` counts the builds: every client in round 1, then the clients a worker serves for the first
time (at 500 × 64 on 2 workers: ~250 in round 2, ~130 in round 3; a build takes ~3 ms against ~28 ms per client and
round). The time of a round runs from the strategy's `configure_fit` to the end of its `aggregate_fit` (dispatch,
client training, serialisation, aggregation). Evaluation is switched off here and fedge's evaluation phase is left
out of its time (`benchmarks.measure`), so both are timed on training rounds alone. Round 1 includes starting the
Ray actors and is reported separately. Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from fedge.models.vision import lenet5

TIMES: list[tuple[float, float]] = []
BUILDS: list[int] = []  # clients whose model and data were built in each round


def run(clients: int, samples: int, rounds: int, seed: int, client_cpus: float = 1.0) -> dict[str, Any]:
    from flwr.client import ClientApp
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from benchmarks.flower_client import cached_client

    def client_fn(context: Context) -> Any:
        return cached_client(int(context.node_config["partition-id"]), seed, samples).to_client()

    class TimedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            TIMES.append((time.perf_counter(), float("nan")))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            BUILDS.append(sum(int(fit.metrics.get("built", 0)) for _, fit in results))
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
                   backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}})
    total = time.perf_counter() - started
    durations = [end - start for start, end in TIMES]
    measured = durations[1:] if len(durations) > 1 else durations
    import flwr

    return {
        "flwr_version": flwr.__version__,
        "client_cpus": client_cpus,
        "round_seconds": durations,
        "samples_per_s": len(measured) * clients * samples / sum(measured) if measured else float("nan"),
        "samples_per_s_first_round": clients * samples / durations[0] if durations else float("nan"),
        "wall_seconds_including_startup": total,
        "client_builds_by_round": BUILDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-cpus", type=float, default=1.0,
                        help="CPUs Ray reserves per client: 1 runs one client per core, 0.5 two")
    args = parser.parse_args()
    result = run(args.clients, args.samples, args.rounds, args.seed, args.client_cpus)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
