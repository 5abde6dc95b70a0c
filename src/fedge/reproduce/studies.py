"""The studies `fedge reproduce --studies` can add to the paper's three (main, delta, devices), for issue 17:

* `decompose`: DPMN's byte saving over DFL split into its pruning part and its neighbour part. Cells: DPMN at the
  main setting, DPMN with dense models (`pruning.target_density = 1`, the same neighbour rule), DFL, and DPMP
  (DPMN's pruning on DFL's fixed graph) as a cross-check. The report adds accuracy at equal bytes from the curves.
* `density`: DPMN at each `pruning.target_density` of a grid (accuracy and traffic against density).
* `scarcity`: the sweep algorithms and `local` at each `data.train_per_device` (training samples per device).
* `skew`: the sweep algorithms and `local` at each partition (`shards:k`, `dirichlet:α`).

The main setting itself is one point of every sweep (its density, all samples, its partition), so those cells are
shared with the main study. This module only says which settings each study needs; `grid` makes the cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedge.reproduce.grid import GridSpec

PAPER_STUDIES = ["main", "delta", "devices"]
EXTRA_STUDIES = ["decompose", "density", "scarcity", "skew"]
STUDY_GROUPS = {"paper": PAPER_STUDIES, "extra": ["main", *EXTRA_STUDIES], "all": [*PAPER_STUDIES, *EXTRA_STUDIES]}

DENSITIES = [0.25, 0.5, 0.75, 1.0]
QUICK_DENSITIES = [0.25, 0.5, 1.0]
TRAIN_PER_DEVICE = [8, 16, 32]
PARTITIONS = ["shards:5", "shards:10", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:1"]
QUICK_PARTITIONS = ["shards:5", "dirichlet:0.1", "dirichlet:1"]
SWEEP_ALGORITHMS = ["dpmn", "dpcg", "local"]
QUICK_SWEEP_ALGORITHMS = ["dpmn", "local"]
DECOMPOSE_ALGORITHMS = ["dpmn", "dfl", "dpmp"]
DENSE = 1.0  # the target density of "dense models" (nothing pruned)


def expand_studies(names: list[str]) -> list[str]:
    """Study names with groups expanded (`paper`, `extra`, `all`), main always first, each once, in a fixed order."""
    wanted = {"main"}
    for name in names:
        wanted.update(STUDY_GROUPS.get(name, [name]))
    return [s for s in [*PAPER_STUDIES, *EXTRA_STUDIES] if s in wanted]


def known_study(name: str) -> bool:
    return name in STUDY_GROUPS or name in PAPER_STUDIES or name in EXTRA_STUDIES


def extra_settings(spec: GridSpec, base_partition: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(study, algorithm, changes to the main setting) for each extra cell of one seed; `changes` uses the keys
    `target_density`, `train_per_device` and `partition` (an empty dict is the main setting itself)."""
    studies = spec.studies_run
    if "decompose" in studies:
        for algorithm in DECOMPOSE_ALGORITHMS:
            yield "decompose", algorithm, {}
        yield "decompose", "dpmn", {"target_density": DENSE}
    if "density" in studies:
        yield "density", "dfl", {}  # the dense reference line of the figure
        for density in spec.density_grid:
            yield "density", "dpmn", {"target_density": density}
    sweep = spec.sweep_algorithm_list
    if "scarcity" in studies:
        for algorithm in sweep:
            yield "scarcity", algorithm, {}
            for count in spec.train_per_device:
                yield "scarcity", algorithm, {"train_per_device": count}
    if "skew" in studies:
        for algorithm in sweep:
            for partition in [base_partition, *spec.partition_grid]:
                yield "skew", algorithm, {} if partition == base_partition else {"partition": partition}


__all__ = ["DECOMPOSE_ALGORITHMS", "DENSE", "EXTRA_STUDIES", "PAPER_STUDIES", "STUDY_GROUPS", "expand_studies",
           "extra_settings", "known_study"]
