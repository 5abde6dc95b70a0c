"""The contract every recommendation algorithm follows, and the state it trains.

Round `rnd` is `uploads = client_round(state, users, rnd)` (all `users` download what they need and train at once,
batched) followed by `server_aggregate(state, uploads, rnd)` (the uploads cross the transport and the aggregator
averages what it received). Every exchange goes through `ctx.transport` and is counted in its ledger; every random
draw comes from `ctx.streams` (`fedge.recsys.draws`). `scoring_state(state, draws)` is the state the devices score
with — the training state itself, or one whose private parts each device first refits to the current model — and
`predict(state, user, item, draws)` scores (user, item) pairs with it, for evaluation and the top-K export.
Private user rows live in `state.user` only to simulate the devices' storage: no algorithm copies them into a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from fedge.core.streams import Streams
from fedge.messaging import Ledger, Transport, make_transport
from fedge.recsys.config import RecsysConfig
from fedge.recsys.dp import UserLevelDP
from fedge.recsys.draws import Draws
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
    """What a round reports besides its bytes (those are the transport ledger's)."""

    loss: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Context:
    """What an algorithm is built from: the config, the data, the run's random streams (default: of `cfg.seed`),
    the transport its messages cross (default: `cfg.runtime.transport` over a fresh ledger, one device per user) and,
    under `privacy.mechanism: user`, the user-level DP mechanism's state (`privacy`: who takes part, the clipping
    norm, the accountant; `fedge.recsys.dp`)."""

    def __init__(self, cfg: RecsysConfig, data: RecData, streams: Streams | None = None,
                 transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.streams = streams if streams is not None else Streams(cfg.seed)
        self.transport = (transport if transport is not None
                          else make_transport(cfg.runtime.transport, Ledger(data.num_users)))
        self.privacy = (UserLevelDP(cfg.privacy, data.num_users, cfg.train.rounds, self.streams)
                        if cfg.privacy.mechanism == "user" else None)

    def draws(self, purpose: str, rnd: int) -> Draws:
        return Draws(self.streams, purpose, rnd)

    def model(self, kind: str) -> Model:
        return make_model(kind, self.cfg.model.dim, self.cfg.model.layers, self.data.rating_offset)


class RecAlgorithm(Protocol):
    name: str
    model: Model

    def init_state(self, generator: torch.Generator) -> RecState: ...

    def client_round(self, state: RecState, users: torch.Tensor, rnd: int) -> Uploads | None: ...

    def server_aggregate(self, state: RecState, uploads: Uploads | None, rnd: int) -> RoundReport: ...

    def scoring_state(self, state: RecState, draws: Draws) -> RecState: ...

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor, draws: Draws) -> torch.Tensor: ...


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
