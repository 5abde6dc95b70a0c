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


class Hosting(Protocol):
    """The users (devices) one process of a distributed run hosts (`fedge.runtimes.distributed.Shard`)."""

    local: torch.Tensor  # [U] bool: hosted here

    def complete(self, values: torch.Tensor) -> torch.Tensor:
        """[U, ...] values, each row taken from the process hosting its user (exact: a sum with zeros)."""
        ...


class Context:
    """What an algorithm is built from: the config, the data, the run's random streams (default: of `cfg.seed`),
    the transport its messages cross (default: `cfg.runtime.transport` over a fresh ledger, one device per user),
    under `privacy.mechanism: user` the user-level DP mechanism's state (`privacy`: who takes part, the clipping
    norm, the accountant; `fedge.recsys.dp`) and, in a distributed run, the users this process hosts (`hosting`;
    None: all of them)."""

    def __init__(self, cfg: RecsysConfig, data: RecData, streams: Streams | None = None,
                 transport: Transport | None = None, hosting: Hosting | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.streams = streams if streams is not None else Streams(cfg.seed)
        self.transport = (transport if transport is not None
                          else make_transport(cfg.runtime.transport, Ledger(data.num_users)))
        self.hosting = hosting
        self.privacy = (UserLevelDP(cfg.privacy, data.num_users, cfg.train.rounds, self.streams)
                        if cfg.privacy.mechanism == "user" else None)

    def hosted(self, users: torch.Tensor) -> torch.Tensor:
        """The given users (order kept) that this process hosts: all of them in one process."""
        return users if self.hosting is None else users[self.hosting.local[users]]

    def complete_rows(self, rows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """[U, ...] from the rows of `users` (`rows[k]` is user `users[k]`'s): every process's hosted users' rows
        joined (one process: the rows in place, zeros for users not given)."""
        full = rows.new_zeros(self.data.num_users, *rows.shape[1:])
        full[users] = rows
        return full if self.hosting is None else self.hosting.complete(full)

    def round_mean(self, values: torch.Tensor, users: torch.Tensor, everyone: torch.Tensor) -> float:
        """The mean over the round's clients `everyone` of a per-client value (`values[k]` is `users[k]`'s, the
        users hosted here): summed in the order of `everyone`, so one process and many give the same bits."""
        if len(everyone) == 0:
            return 0.0
        return float(self.complete_rows(values, users)[everyone].sum() / len(everyone))

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
