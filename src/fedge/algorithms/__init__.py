"""Algorithms of `fedge run`: one small file each, composed from components (`components/`), registered by name in
`ALGORITHMS` (fedge.algorithms.registry). Importing this package registers the built-in ones."""

from __future__ import annotations

from fedge.algorithms import dfl, dpcg, dpmn, dpmn_r, dpmp, fedavg, hfl, local  # noqa: F401 - registers them
from fedge.algorithms.base import Algorithm, Combiner, Component, Pruner, Sampler, Selector
from fedge.algorithms.registry import ALGORITHMS, create

__all__ = ["ALGORITHMS", "Algorithm", "Combiner", "Component", "Pruner", "Sampler", "Selector", "create"]
