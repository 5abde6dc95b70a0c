"""The contract every recommendation algorithm follows, and the state it trains.

A round is `uploads = client_round(state, users, gen)` (all `users` train at once, batched) followed by
`server_aggregate(state, uploads)`. `scoring_state(state, gen)` is the state the devices score with — the training
state itself, or one whose private parts each device first refits to the downloaded model — and
`predict(state, user, item, gen)` scores (user, item) pairs with it, for evaluation and the top-K export.
Private user rows live in `state.user` only to simulate the devices' storage: no algorithm copies them into an upload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from fedge.recsys.config import RecsysConfig
from fedge.recsys.models import Model, make_model
from fedge.recsys.protocol import RecData
from fedge.recsys.wire import Uploads


@dataclass
class RecState:
    """Shared model (server side, or each edge's copy) and the devices' private user rows."""

    shared: dict[str, torch.Tensor]
    user: torch.Tensor | None  # [U, du]; None for stateless clients (fedmeta)


@dataclass
class RoundReport:
    bytes_up: int = 0  # clients -> server (or edge)
    bytes_down: int = 0  # server (or edge) -> clients
    bytes_peer: int = 0  # edge <-> edge (decentralized)
    loss: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Context:
    """What an algorithm is built from."""

    cfg: RecsysConfig
    data: RecData

    def model(self, kind: str) -> Model:
        return make_model(kind, self.cfg.model.dim, self.cfg.model.layers, self.data.rating_offset)


class RecAlgorithm(Protocol):
    name: str
    model: Model

    def init_state(self, generator: torch.Generator) -> RecState: ...

    def client_round(self, state: RecState, users: torch.Tensor, generator: torch.Generator) -> Uploads | None: ...

    def server_aggregate(self, state: RecState, uploads: Uploads | None) -> RoundReport: ...

    def scoring_state(self, state: RecState, generator: torch.Generator) -> RecState: ...

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor: ...


def predict_with(model: Model, user_rows: torch.Tensor, shared: dict[str, torch.Tensor], user: torch.Tensor,
                 item: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:
    """Scores of (user, item) pairs with one shared model, in chunks to bound memory."""
    out = []
    dense = {k: v for k, v in shared.items() if k != "item"}
    with torch.no_grad():
        for lo in range(0, len(user), chunk):
            u, i = user[lo: lo + chunk], item[lo: lo + chunk]
            out.append(model.predict(user_rows[u], shared["item"][i], dense))
    return torch.cat(out) if out else torch.zeros(0)
