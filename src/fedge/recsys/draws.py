"""Per-user random draws from named streams (`fedge.core.streams`): every random number of a recommendation run is a
pure function of (seed, purpose, round, user, draw number).

Why: a user's negatives, minibatch order or refit must not depend on which other users share its round, on the
order users are stored in, or on how a round is cut into chunks or edges. So draw j of user u in round r for
purpose p is the counter-based uniform of key (seed, p, r) at "device" u·2³² + j and counter c (an epoch or a
redraw attempt), computed in bulk without a Python loop over users. Purposes are names ("recsys-train/negatives");
`child` extends them.

Streams of the run (all `recsys-…`): `split` (data split), `init` (shared model initialisation), `init-user` (each
device's own user row), `clients` (who takes part in a round), `train/negatives`, `train/shuffle`, `train/user-fit`
(local training), `refit` (evaluation-time refit of user rows), `eval` (fedmeta's evaluation-time adaptation; also
the top-K export, so that it scores with the models the last evaluation measured), `central-order` (the centralized
references' minibatch order), `edges` (decentralized: which edge serves which user), `neighbours` (random neighbour
selection); under user-level DP (`fedge.recsys.dp`) `dp-sampling` (who takes part), `dp-noise` (the server's noise)
and `dp-count` (the noise on the count of unclipped updates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.core.aggregation import positions_within
from fedge.core.streams import Streams

_DRAW_BITS = 32  # draw numbers per user and purpose below 2³²


@dataclass(frozen=True)
class Draws:
    """The draws of one purpose in one round."""

    streams: Streams
    purpose: str
    round: int = 0

    def child(self, name: str) -> Draws:
        return Draws(self.streams, f"{self.purpose}/{name}", self.round)

    def uniform(self, users: torch.Tensor, index: torch.Tensor, counter: int = 0) -> torch.Tensor:
        """[n] float32 uniforms in [0, 1): entry e is draw `index[e]` of user `users[e]` (at `counter`)."""
        if len(users) == 0:
            return torch.zeros(0)
        keys = users.to(torch.int64) * (1 << _DRAW_BITS) + index.to(torch.int64)
        return self.streams.uniform(self.purpose, self.round, keys, torch.tensor([counter]))[:, 0]

    def generator(self, *parts: int) -> torch.Generator:
        """A sequential generator of this purpose and round (for draws that are not per user)."""
        return self.streams.generator(self.purpose, self.round, *parts)


def index_within(groups: torch.Tensor) -> torch.Tensor:
    """[n] the position of each entry among the entries of its group, in order of appearance (any layout)."""
    if len(groups) == 0:
        return groups.clone()
    if bool((groups[1:] >= groups[:-1]).all()):
        return positions_within(groups)
    order = torch.argsort(groups, stable=True)
    index = torch.empty_like(groups)
    index[order] = positions_within(groups[order])
    return index


__all__ = ["Draws", "index_within"]
