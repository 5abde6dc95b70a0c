"""Share of DPMN's selected edges whose two devices hold at least one common class (issue acceptance check).

    python -m benchmarks.neighbour_quality RUN_DIR/dpmn [RUN_DIR/dpmn-r ...]

Reads the run's summary.json (resolved config) and neighbours.jsonl, rebuilds the same partition, and prints the
fraction of selected edges sharing a class against the fraction over all device pairs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedge.config import build
from fedge.data.federated import FederatedData
from fedge.experiment import ExperimentConfig
from fedge.runtimes.setup import prepare


def class_sharing(data: FederatedData, neighbour_rounds: list[list[list[int]]]) -> tuple[float, float, int]:
    """(share over selected edges, share over all ordered pairs, number of edges); `neighbour_rounds[r][i]` lists the
    device ids device i received from in round r (as in neighbours.jsonl)."""
    labels = data.label_sets()
    n = len(labels)
    edges = [(i, j) for rows in neighbour_rounds for i, row in enumerate(rows) for j in row]
    shared = sum(bool(labels[i] & labels[j]) for i, j in edges)
    pairs = sum(bool(labels[i] & labels[j]) for i in range(n) for j in range(n) if i != j)
    return shared / max(len(edges), 1), pairs / (n * (n - 1)), len(edges)


def main() -> None:
    for run in map(Path, sys.argv[1:]):
        config = build(ExperimentConfig, json.loads((run / "summary.json").read_text())["config"])
        data = prepare(config).data
        rounds = [json.loads(line)["neighbours"] for line in (run / "neighbours.jsonl").read_text().splitlines()]
        edge_share, pair_share, count = class_sharing(data, rounds)
        print(f"{run}: {100 * edge_share:.1f}% of {count} selected edges share a class "
              f"(all pairs: {100 * pair_share:.1f}%)")


if __name__ == "__main__":
    main()
