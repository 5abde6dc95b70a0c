"""Recommendation algorithms and their registry (`RECSYS_ALGORITHMS`, also exported as `ALGORITHMS`)."""

from __future__ import annotations

from fedge.recsys.algorithms.registry import RECSYS_ALGORITHMS, build

ALGORITHMS = RECSYS_ALGORITHMS

__all__ = ["ALGORITHMS", "RECSYS_ALGORITHMS", "build"]
