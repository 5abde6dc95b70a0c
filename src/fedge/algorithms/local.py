"""Local: every device trains alone on its own data; no communication (the lower reference)."""

from __future__ import annotations

from fedge.algorithms.components.combining import NoCombining


class Local:
    name = "local"
    description = "no communication"

    def __init__(self) -> None:
        self.pruner = None
        self.selector = None
        self.combiner = NoCombining()
