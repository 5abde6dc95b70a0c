"""`fedge reproduce` keeps its base settings in the package (an installed fedge has no configs/ folder); they must
stay identical to the YAML presets in configs/ that `fedge run --config` uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.config import build, load_yaml, merge_mappings, to_dict
from fedge.experiment import ExperimentConfig
from fedge.reproduce.grid import _COMMON, PRESETS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = {"digits": "digits-lenet5", "fmnist": "fmnist-lenet5", "cifar10": "cifar10-lenet5",
         "emnist": "emnist-alexnet", "synthetic": "synthetic-mlp"}


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_reproduce_preset_equals_yaml_preset(dataset: str) -> None:
    from_grid = to_dict(build(ExperimentConfig, merge_mappings(_COMMON, PRESETS[dataset])))
    from_yaml = to_dict(build(ExperimentConfig, load_yaml(CONFIGS / f"{FILES[dataset]}.yaml")))
    for settings in (from_grid, from_yaml):
        settings.pop("algorithms")  # the grid chooses algorithms per study
    assert from_grid == from_yaml
