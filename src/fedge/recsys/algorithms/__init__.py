"""Registry of recommendation algorithms: name -> builder(Context) returning an object on the `RecAlgorithm`
contract (`init_state`, `client_round`, `server_aggregate`, `predict`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedge.recsys.algorithms import centralized, decentralized, fedmeta, fedmf, fedncf

ALGORITHMS: dict[str, Callable[[Any], Any]] = {
    "fedmf": fedmf.build,
    "fedncf": fedncf.build,
    "fedmeta": fedmeta.build,
    "dfedmf": decentralized.build_mf,
    "dfedncf": decentralized.build_ncf,
    "central-mf": centralized.build_mf,
    "central-neumf": centralized.build_neumf,
}

__all__ = ["ALGORITHMS"]
