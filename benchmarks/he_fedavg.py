"""fedavg and hfl under CKKS inside `fedge run` next to plaintext (docs/secure.md, issue 16 acceptance 4).

    OMP_NUM_THREADS=1 python -m benchmarks.he_fedavg [--devices 20] [--rounds 30] [--algorithms fedavg hfl]

Runs each algorithm on the offline digits default twice — plaintext and `secure.aggregation: ckks` (hfl: its
device → edge uploads) — and reports the final mean accuracy, bytes by message kind, run seconds and the CKKS
per-round encrypt (all devices) / aggregate (the aggregators) / decrypt (one device per aggregate) seconds, as the
run's summary.json has them (`"he"`, from `Combiner.report`). A measurement, not a test; results go to
benchmarks/results/ with the machine (`fedge.runfolder.environment()`). Whether one run's accuracy is within 0.1
points of plaintext is run-to-run variation here: see benchmarks/he_stability.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.runfolder import environment
from fedge.runtimes.simulator import simulate


def run(algorithm: str, devices: int, rounds: int, aggregation: str) -> dict[str, Any]:
    config = build(ExperimentConfig, {"algorithms": [algorithm], "rounds": rounds, "data": {"devices": devices},
                                      "secure": {"aggregation": aggregation}})
    summary = simulate(config, algorithm, None).summary
    out = {key: summary[key] for key in ("accuracy_mean", "bytes_by_kind", "bytes_by_link", "seconds", "rounds",
                                         "model_parameters")}
    if "he" in summary:
        out["he_per_round_mean"] = summary["he"]["per_round_mean"]
        out["he_per_round"] = summary["he"]["per_round"]
    print(json.dumps({"algorithm": algorithm, "aggregation": aggregation,
                      **{k: v for k, v in out.items() if k != "he_per_round"}}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--algorithms", nargs="+", default=["fedavg", "hfl"])
    parser.add_argument("--out", default=f"benchmarks/results/he-runs-{datetime.date.today()}.json")
    args = parser.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    for algorithm in args.algorithms:
        runs[algorithm] = {name: run(algorithm, args.devices, args.rounds, name) for name in ("none", "ckks")}
        runs[algorithm]["ckks"]["accuracy_points_vs_plaintext"] = 100 * (runs[algorithm]["ckks"]["accuracy_mean"]
                                                                         - runs[algorithm]["none"]["accuracy_mean"])
    results = {"environment": environment(), "devices": args.devices, "rounds": args.rounds, "runs": runs}
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
