"""The registry of `fedge run` algorithms: name -> builder(ExperimentConfig) -> Algorithm.

Builders take each component's own config section from the experiment config; components never see the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from fedge.algorithms.base import Algorithm
from fedge.experiment import ExperimentConfig
from fedge.registry import Registry

Builder = Callable[[ExperimentConfig], Algorithm]
ALGORITHMS: Registry[Builder] = Registry("algorithm")


def create(name: str, config: ExperimentConfig) -> Algorithm:
    """Build algorithm `name` from `config` (ConfigError for an unknown name)."""
    algorithm = ALGORITHMS.create(name, config)
    assert isinstance(algorithm, Algorithm)
    return algorithm


__all__ = ["ALGORITHMS", "Builder", "create"]
