"""fedavg under CKKS inside `fedge run` next to plaintext (docs/secure.md, issue 16 acceptance 4's last clause).

    OMP_NUM_THREADS=1 python -m benchmarks.he_fedavg [--devices 20] [--rounds 30]

Runs fedavg on the offline digits default twice — plaintext and `secure.aggregation: ckks` — and reports the final
mean accuracy, bytes by message kind, run seconds and the CKKS per-round encrypt (all devices) / aggregate (server)
/ decrypt (one device) seconds from the combiner (`EncryptedAveraging.costs`). A measurement, not a test; results go
to benchmarks/results/ with the machine (`fedge.runfolder.environment()`).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from fedge.algorithms.components.he_averaging import round_costs
from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.runfolder import environment
from fedge.runtimes.simulator import simulate


def run(devices: int, rounds: int, aggregation: str) -> dict[str, Any]:
    config = build(ExperimentConfig, {"algorithms": ["fedavg"], "rounds": rounds, "data": {"devices": devices},
                                      "secure": {"aggregation": aggregation}})
    result = simulate(config, "fedavg", None)
    summary = result.summary
    out = {"accuracy_mean": summary["accuracy_mean"], "bytes_by_kind": summary["bytes_by_kind"],
           "seconds": summary["seconds"], "rounds": summary["rounds"],
           "model_parameters": summary["model_parameters"]}
    costs = getattr(result.state.algorithm.combiner, "costs", None)
    if costs is not None:
        out["he_per_round_mean"] = round_costs(costs)
        out["he_per_round"] = costs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=f"benchmarks/results/he-fedavg-{datetime.date.today()}.json")
    args = parser.parse_args()
    runs = {name: run(args.devices, args.rounds, name) for name in ("none", "ckks")}
    runs["ckks"]["accuracy_points_vs_plaintext"] = 100 * (runs["ckks"]["accuracy_mean"]
                                                          - runs["none"]["accuracy_mean"])
    results = {"environment": environment(), "devices": args.devices, "rounds": args.rounds, "runs": runs}
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({name: {k: v for k, v in r.items() if k != "he_per_round"} for name, r in runs.items()},
                     indent=1))


if __name__ == "__main__":
    main()
