"""fedge: federated learning at the edge.

The library API (`fedge.experiment`, `fedge.run`, `fedge.register_algorithm`, ...) lives in `fedge.api` and is
reachable from here; it is imported on first use, so `import fedge` and the command line stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    api = importlib.import_module("fedge.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'fedge' has no attribute {name!r}")
