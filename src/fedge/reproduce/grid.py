"""The experiment grid of `fedge reproduce`: dataset presets, the three studies, and the cells they need.

A *cell* is one (resolved `ExperimentConfig`, algorithm) pair; its seed is part of the config. Three studies share
cells where they overlap:

* `main`: every algorithm at the preset's device count and δ = 0.2 (accuracy/traffic curves and the table);
* `delta`: DPMN at each δ of the δ grid (the paper's Fig. 4);
* `devices`: the decentralized algorithms at each device count (the paper's Fig. 5).

`--studies` adds issue 17's studies (byte-saving decomposition, density, data-scarcity and label-skew sweeps), whose
settings `studies` lists; they share cells with the main study where they meet it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import fedge
from fedge.config import (
    ConfigError,
    PositiveInt,
    Range,
    Share,
    Similarity,
    apply_overrides,
    build,
    check,
    merge_mappings,
    to_dict,
)
from fedge.data.partition import PartitionSpec
from fedge.experiment import ExperimentConfig
from fedge.output import dumps
from fedge.reproduce import studies as extra

MAIN_ALGORITHMS = ["dpmn", "dfl", "dpmp", "dpcg", "dpmn-r", "local", "fedavg"]
DEVICE_ALGORITHMS = ["dpmn", "dfl", "dpmp", "dpcg", "dpmn-r"]
QUICK_DEVICE_ALGORITHMS = ["dpmn", "dpmn-r", "dfl"]
DELTAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
DEVICE_COUNTS = [10, 20, 50, 100]
QUICK_ROUNDS = 15
QUICK_SEEDS = 2

_COMMON = {"pruning": {"target_density": 0.5}, "neighbours": {"delta": 0.2, "k_min": 1, "k_max": 4}}

# The same settings as configs/<dataset>-<model>.yaml (kept here so an installed package needs no repo checkout).
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"rounds": 30, "data": {"dataset": "digits", "devices": 20, "partition": "shards:2"},
               "train": {"model": "lenet5", "epochs": 2, "batch_size": 16, "lr": 0.1},
               "pruning": {"ramp_rounds": 3}},
    "fmnist": {"rounds": 50, "data": {"dataset": "fmnist", "devices": 50, "partition": "shards:2"},
               "train": {"model": "lenet5", "epochs": 1, "batch_size": 32, "lr": 0.05},
               "pruning": {"ramp_rounds": 5}},
    "cifar10": {"rounds": 100, "data": {"dataset": "cifar10", "devices": 50, "partition": "shards:2"},
                "train": {"model": "lenet5", "epochs": 1, "batch_size": 32, "lr": 0.05},
                "pruning": {"ramp_rounds": 5}},
    "emnist": {"rounds": 50, "data": {"dataset": "emnist", "devices": 100, "partition": "dirichlet:0.5"},
               "train": {"model": "alexnet", "epochs": 1, "batch_size": 64, "lr": 0.01},
               "pruning": {"ramp_rounds": 5}},
    "synthetic": {"rounds": 20, "data": {"dataset": "synthetic", "devices": 100, "partition": "iid"},
                  "train": {"model": "mlp", "epochs": 1, "batch_size": 10, "lr": 0.05},
                  "pruning": {"ramp_rounds": 3}},
}


@dataclass
class GridSpec:
    """What `fedge reproduce` runs. `None` fields take the preset's (or `--quick`'s) value."""

    dataset: str = "digits"
    data_dir: str | None = None
    quick: bool = False
    seeds: PositiveInt | None = None
    rounds: PositiveInt | None = None
    deltas: list[Similarity] = field(default_factory=lambda: list(DELTAS))
    device_counts: list[Annotated[int, Range(2)]] = field(default_factory=lambda: list(DEVICE_COUNTS))
    algorithms: list[str] = field(default_factory=lambda: list(MAIN_ALGORITHMS))
    device_algorithms: list[str] | None = None
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE on the base experiment config
    studies: list[str] = field(default_factory=lambda: ["paper"])  # names or groups of `studies`
    densities: list[Share] | None = None  # density study: pruning.target_density grid
    train_per_device: list[PositiveInt] = field(default_factory=lambda: list(extra.TRAIN_PER_DEVICE))
    partitions: list[str] | None = None  # label-skew study, besides the main setting's partition
    sweep_algorithms: list[str] | None = None  # scarcity and skew studies (local is always added)

    def validate(self) -> None:
        check(self.dataset in PRESETS, f"dataset: unknown dataset {self.dataset!r} (choose from "
              f"{', '.join(PRESETS)})")
        check(len(self.deltas) >= 1, "deltas: give at least one δ")
        check(len(self.device_counts) >= 1, "device_counts: give at least one device count")
        check(len(self.algorithms) >= 1, "algorithms: name at least one algorithm")
        for name in self.studies:
            check(extra.known_study(name), f"studies: unknown study {name!r} (choose from "
                  f"{', '.join([*extra.STUDY_GROUPS, *extra.PAPER_STUDIES, *extra.EXTRA_STUDIES])})")
        check(len(self.studies) >= 1, "studies: name at least one study")
        check(self.densities is None or len(self.densities) >= 1, "densities: give at least one density")
        check(len(self.train_per_device) >= 1, "train_per_device: give at least one sample count")
        check(self.partitions is None or len(self.partitions) >= 1, "partitions: give at least one partition")
        check(self.sweep_algorithms is None or len(self.sweep_algorithms) >= 1,
              "sweep_algorithms: name at least one algorithm")
        for text in self.partitions or []:
            try:
                PartitionSpec.parse(text)
            except ConfigError as err:
                raise ConfigError(f"partitions: {str(err).removeprefix('partition: ')}") from None

    @property
    def studies_run(self) -> list[str]:
        return extra.expand_studies(self.studies)

    @property
    def density_grid(self) -> list[float]:
        return list(self.densities) if self.densities is not None else list(
            extra.QUICK_DENSITIES if self.quick else extra.DENSITIES)

    @property
    def partition_grid(self) -> list[str]:
        return list(self.partitions) if self.partitions is not None else list(
            extra.QUICK_PARTITIONS if self.quick else extra.PARTITIONS)

    @property
    def sweep_algorithm_list(self) -> list[str]:
        chosen = self.sweep_algorithms or (extra.QUICK_SWEEP_ALGORITHMS if self.quick else extra.SWEEP_ALGORITHMS)
        return [*dict.fromkeys([*chosen, "local"])]

    @property
    def num_seeds(self) -> int:
        return self.seeds if self.seeds is not None else (QUICK_SEEDS if self.quick else 3)

    @property
    def scaling_algorithms(self) -> list[str]:
        if self.device_algorithms is not None:
            return self.device_algorithms
        chosen = QUICK_DEVICE_ALGORITHMS if self.quick else DEVICE_ALGORITHMS
        return [name for name in chosen if name in self.algorithms] or chosen

    def base_config(self) -> ExperimentConfig:
        """The main setting (preset ← quick ← --rounds/--data-dir ← --set), validated strictly."""
        raw = merge_mappings(_COMMON, PRESETS[self.dataset])
        if self.quick:
            raw["rounds"] = min(raw["rounds"], QUICK_ROUNDS)
        if self.rounds is not None:
            raw["rounds"] = self.rounds
        if self.data_dir is not None:
            raw["data"]["data_dir"] = self.data_dir
        apply_overrides(raw, self.overrides)
        raw["algorithms"] = list(self.algorithms)
        return build(ExperimentConfig, raw)


@dataclass
class Cell:
    """One run to make: `algorithm` under the resolved `config` (a plain dict, as `to_dict` gives it)."""

    key: str
    algorithm: str
    config: dict[str, Any]
    studies: list[str]
    engine: str = ""  # engine_fingerprint() of the run that planned the cell

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def devices(self) -> int:
        return int(self.config["data"]["devices"])

    @property
    def delta(self) -> float:
        return float(self.config["neighbours"]["delta"])

    @property
    def partition(self) -> str:
        return str(self.config["data"]["partition"])

    @property
    def target_density(self) -> float:
        return float(self.config["pruning"]["target_density"])

    @property
    def train_per_device(self) -> int:
        """The cap on training samples per device; 0 for none (all of the partition's samples)."""
        return int(self.config["data"].get("train_per_device") or 0)


def resolved(config: ExperimentConfig, algorithm: str) -> dict[str, Any]:
    """The config of one cell as plain data: only its own algorithm, and no output folder (it does not change
    the result)."""
    raw = to_dict(config)
    raw["algorithms"] = [algorithm]
    raw.pop("out", None)
    return raw


# The code a cell's numbers depend on; edits to the report, plots or other commands keep the cache valid.
ENGINE_PARTS = ("algorithms", "core", "data", "messaging", "models", "runtimes", "experiment.py", "config.py",
                "registry.py")


@functools.lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """A hash of the engine's source files, so that cells computed by different code (a development checkout
    being edited, or an upgrade) are never mixed in one report."""
    root = Path(fedge.__file__).parent
    digest = hashlib.sha256()
    for part in ENGINE_PARTS:
        files = sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cell_key(config: dict[str, Any], algorithm: str, engine: str | None = None) -> str:
    """A content hash of everything that determines a cell's result: its resolved config, the algorithm, the
    fedge version and the engine's source fingerprint."""
    payload = dumps({"algorithm": algorithm, "config": config, "fedge": fedge.__version__,
                     "engine": engine or engine_fingerprint()})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _variant(base: ExperimentConfig, seed: int, devices: int | None = None, delta: float | None = None,
             target_density: float | None = None, train_per_device: int | None = None,
             partition: str | None = None) -> ExperimentConfig:
    clone = copy.deepcopy(base)
    clone.seed = seed
    if devices is not None:
        clone.data.devices = devices
    if delta is not None:
        clone.neighbours.delta = delta
    if target_density is not None:
        clone.pruning.target_density = target_density
    if train_per_device is not None:
        clone.data.train_per_device = train_per_device
    if partition is not None:
        clone.data.partition = partition
    clone.validate()
    clone.data.validate()
    clone.neighbours.validate()
    return clone


def build_cells(spec: GridSpec) -> tuple[ExperimentConfig, list[Cell]]:
    """The base config and every cell of the grid, each cell once even when several studies use it."""
    base = spec.base_config()
    from fedge.algorithms import ALGORITHMS

    wanted = spec.studies_run
    sweep = spec.sweep_algorithm_list if {"scarcity", "skew"} & set(wanted) else []
    for name in [*spec.algorithms, *spec.scaling_algorithms, *sweep]:
        if name not in ALGORITHMS:
            raise ConfigError(f"algorithms: unknown algorithm {name!r} (choose from {', '.join(ALGORITHMS)})")
    cells: dict[str, Cell] = {}
    engine = engine_fingerprint()

    def add(config: ExperimentConfig, algorithm: str, study: str) -> None:
        raw = resolved(config, algorithm)
        key = cell_key(raw, algorithm, engine)
        cell = cells.setdefault(key, Cell(key, algorithm, raw, [], engine))
        if study not in cell.studies:
            cell.studies.append(study)

    for seed in range(spec.num_seeds):
        for algorithm in spec.algorithms:
            add(_variant(base, seed), algorithm, "main")
        if "dpmn" in spec.algorithms and "delta" in wanted:
            for delta in spec.deltas:
                add(_variant(base, seed, delta=delta), "dpmn", "delta")
        if "devices" in wanted:
            for devices in spec.device_counts:
                for algorithm in spec.scaling_algorithms:
                    add(_variant(base, seed, devices=devices), algorithm, "devices")
        for study, algorithm, changes in extra.extra_settings(spec, base.data.partition):
            add(_variant(base, seed, **changes), algorithm, study)
    ordered = sorted(cells.values(), key=lambda c: (c.devices, c.seed, c.delta, c.partition, c.target_density,
                                                    c.train_per_device, c.algorithm))
    return base, ordered
