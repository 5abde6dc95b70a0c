"""Opacus's own cost of a DP-SGD step on this machine: the reference for fedge's (`benchmarks/dp_sgd_cost.py`).

    python -m benchmarks.dp_sgd_opacus --repeats 11

Issue 15's target, a DP-SGD step at most 1.6x a plain one, is Opacus's CPU ratio on MNIST. This measures that ratio
here, on the workload `dp_sgd_cost` calls `lenet5-28x28-20x600`: LeNet-5 on the same 12,000 synthetic 28x28 images
(`benchmarks.workloads`), batch 32, SGD at the same learning rate, one model as Opacus trains it. A plain epoch is
the loop of Opacus's MNIST example without privacy (a shuffling `DataLoader`, `loss.backward()`, `optimizer.step()`);
a DP-SGD epoch is the same loop after `PrivacyEngine.make_private` (Poisson sampling, per-sample gradients from its
hooks, flat clipping to C, Gaussian noise σC). Both are timed back to back in alternating order, with `--threads`
intra-op threads (1: as fedge trains one device per thread); the ratio is per step (a Poisson epoch has a random
number of steps). A measurement, not a test; results go to benchmarks/results/ with the machine.
"""

from __future__ import annotations

import copy
import datetime
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.dp_sgd_cost import dp_parser
from benchmarks.measure import save_report
from benchmarks.workloads import BATCH_SIZE, INPUT_SHAPE, LR, NUM_CLASSES, client_tensors
from fedge.models.vision import lenet5
from fedge.runfolder import environment
from fedge.runtimes.device_threads import intra_op_threads

RESULTS = Path(__file__).resolve().parent / "results"


def epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, steps) of one pass over `loader`."""
    started, cpu, steps = time.perf_counter(), time.process_time(), 0
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        steps += 1
    return time.perf_counter() - started, time.process_time() - cpu, steps


def measure(repeats: int, seed: int, noise_multiplier: float, max_grad_norm: float, clients: int,
            samples: int) -> dict[str, Any]:
    from opacus import PrivacyEngine  # the optional `privacy` extra

    parts = [client_tensors(seed, client, samples) for client in range(clients)]
    data = TensorDataset(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
    torch.manual_seed(seed)
    plain_model = lenet5(INPUT_SHAPE, NUM_CLASSES)
    private_model = copy.deepcopy(plain_model)
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=LR)
    plain_loader = DataLoader(data, batch_size=BATCH_SIZE, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    engine = PrivacyEngine(accountant="rdp")
    private_model, private_optimizer, private_loader = engine.make_private(
        module=private_model, optimizer=torch.optim.SGD(private_model.parameters(), lr=LR),
        data_loader=DataLoader(data, batch_size=BATCH_SIZE, shuffle=True), noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=True)
    epoch(plain_model, plain_optimizer, plain_loader)  # warm-up
    epoch(private_model, private_optimizer, private_loader)
    runs: dict[str, list[tuple[float, float, int]]] = {"plain": [], "dp_sgd": []}
    for repeat in range(repeats):
        order = ("plain", "dp_sgd") if repeat % 2 == 0 else ("dp_sgd", "plain")
        for which in order:
            if which == "plain":
                runs[which].append(epoch(plain_model, plain_optimizer, plain_loader))
            else:
                runs[which].append(epoch(private_model, private_optimizer, private_loader))
    ratios = [(p[0] / p[2]) / (q[0] / q[2]) for p, q in zip(runs["dp_sgd"], runs["plain"], strict=True)]
    cpu_ratios = [(p[1] / p[2]) / (q[1] / q[2]) for p, q in zip(runs["dp_sgd"], runs["plain"], strict=True)]
    return {"workload": f"opacus-lenet5-28x28-{clients}x{samples}", "samples": len(data), "batch_size": BATCH_SIZE,
            "epochs": runs, "step_ratio": {"per_repeat": ratios, "median": statistics.median(ratios),
                                           "min": min(ratios), "max": max(ratios)},
            "cpu_step_ratio": {"per_repeat": cpu_ratios, "median": statistics.median(cpu_ratios)},
            "epsilon_after_all_epochs": engine.get_epsilon(1e-5)}


def main(argv: list[str] | None = None) -> int:
    parser = dp_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--clients", type=int, default=20, help="the data of this many clients, as one dataset")
    parser.add_argument("--samples", type=int, default=600, help="samples per client")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/dp-sgd-opacus-DATE.json)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.clients < 1 or args.samples < BATCH_SIZE:
        parser.error("--repeats, --threads and --clients must be >= 1 and --samples >= the batch size")
    with intra_op_threads(args.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # Opacus's default, as in its examples
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no gradient
        result = measure(args.repeats, args.seed, args.noise_multiplier, args.max_grad_norm, args.clients,
                         args.samples)
    ratio = result["step_ratio"]
    print(f"{result['workload']} (Opacus {__import__('opacus').__version__}, {args.threads} thread(s)): DP-SGD step / "
          f"plain step {ratio['median']:.2f}x (min {ratio['min']:.2f}, max {ratio['max']:.2f}); CPU time "
          f"{result['cpu_step_ratio']['median']:.2f}x", flush=True)
    report = {"benchmark": "dp_sgd_opacus", "threads": args.threads, "repeats": args.repeats,
              "dp": {"noise_multiplier": args.noise_multiplier, "max_grad_norm": args.max_grad_norm},
              "result": result, "environment": environment(), "date": datetime.date.today().isoformat()}
    save_report(report, args.out or RESULTS / f"dp-sgd-opacus-{report['date']}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
