"""Algorithms: one small file each, composed from components; `ALGORITHMS` maps config names to classes."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.dfl import DFL
from fedge.algorithms.dpcg import DPCG
from fedge.algorithms.dpmn import DPMN
from fedge.algorithms.dpmn_r import DPMNR
from fedge.algorithms.dpmp import DPMP
from fedge.algorithms.fedavg import FedAvg
from fedge.algorithms.hfl import HFL
from fedge.algorithms.local import Local

ALGORITHMS: dict[str, type] = {cls.name: cls for cls in (DPMN, DFL, DPMP, DPCG, DPMNR, Local, FedAvg, HFL)}


def create(name: str) -> Algorithm:
    return ALGORITHMS[name]()


__all__ = ["ALGORITHMS", "Algorithm", "create"]
