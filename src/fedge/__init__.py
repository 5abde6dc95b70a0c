"""fedge: federated learning at the edge.

The library API (`fedge.experiment`, `fedge.run`, `fedge.register_algorithm`, ...) lives in `fedge.api` and is
reachable from here; it is imported on first use, so `import fedge` and the command line stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


# The names `fedge.api` exports (kept here so that looking up any other name, e.g. a submodule during
# `from fedge import x`, never imports the API).
_API = frozenset({
    "ALGORITHMS", "DATASETS", "MODELS", "AdaptivePruner", "Algorithm", "ArrayDataset", "ClientSampling", "Combiner",
    "Component", "ConfigError", "DeviceState", "EdgeCloudAveraging", "ExperimentConfig", "FixedTopology", "Inbox",
    "NeighbourAveraging", "NeighbourRegularizer", "Pruner", "RandomLikeSelection", "Round", "RunContext",
    "RunResult", "Sampler", "Selector", "ServerAveraging", "SimilaritySelection", "Simulation", "configure",
    "register_algorithm", "register_dataset", "register_model", "run", "simulate",
})


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'fedge' has no attribute {name!r}")
    return getattr(importlib.import_module("fedge.api"), name)
