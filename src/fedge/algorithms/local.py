"""Local: every device trains alone on its own data; no communication (the lower reference)."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig


@ALGORITHMS.register("local", "no communication")
def build(config: ExperimentConfig) -> Algorithm:
    return Algorithm("local")
