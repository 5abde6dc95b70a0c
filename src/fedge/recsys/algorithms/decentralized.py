"""Decentralized federated recommendation over edge servers (paper section II.C, decentralized architecture).

Users are split over `num_edges` edge servers (seeded). Each round every edge runs the inner client-server
algorithm (fedmf or fedncf) with its own users and its own copy of the shared model; then the edges, with no central
server, exchange their item-factor updates with neighbours:

1. each edge sends every other edge its round profile — how often its users touched each item — as a sparse
   payload (bytes counted);
2. each edge scores the others with `fedge.core.similarity.overlap_cosine` of those profiles and keeps its
   neighbours with `fedge.core.neighbours.threshold_select` (score ≥ δ, at most k, at least one) or, as a
   baseline, `random_select`;
3. each chosen neighbour sends its updated rows (the items it touched this round + dense tensors; bytes counted) and
   the edge replaces each coordinate by the average over itself and the neighbours that sent it (`masked_average`;
   D-PSGD-style mixing, Lian et al. 2017, restricted to the touched items).
"""

from __future__ import annotations

import torch

from fedge.core.aggregation import masked_average
from fedge.core.codec import encoded_sizes
from fedge.core.neighbours import random_select, threshold_select
from fedge.core.similarity import overlap_cosine
from fedge.recsys.algorithms.base import Context, RecState, RoundReport
from fedge.recsys.algorithms.federated import FederatedRecommender


class Decentralized:
    def __init__(self, name: str, inner: FederatedRecommender, ctx: Context) -> None:
        self.name = name
        self.inner = inner
        self.model = inner.model
        self.ctx = ctx
        cfg = ctx.cfg.decentralized
        gen = torch.Generator().manual_seed(ctx.cfg.seed + 104729)
        self.edge_of_user = torch.randperm(ctx.data.num_users, generator=gen) % cfg.num_edges
        self._reports: list[RoundReport] = []  # this round's user -> edge reports, one per edge
        self._profiles: list[torch.Tensor] = []  # this round's item-touch counts, one per edge

    def edge_state(self, state: RecState, edge: int) -> RecState:
        """Edge `edge`'s view (in-place updates write through to the stacked tensors)."""
        return RecState({k: v[edge] for k, v in state.shared.items()}, state.user)

    def init_state(self, generator: torch.Generator) -> RecState:
        base = self.inner.init_state(generator)
        num_edges = self.ctx.cfg.decentralized.num_edges
        shared = {k: v.unsqueeze(0).repeat(num_edges, *([1] * v.dim())) for k, v in base.shared.items()}
        return RecState(shared, base.user)

    def client_round(self, state: RecState, users: torch.Tensor, generator: torch.Generator) -> None:
        """Users train with their own edge; each edge aggregates its users' uploads."""
        self._reports, self._profiles = [], []
        for edge in range(self.ctx.cfg.decentralized.num_edges):  # a loop over edge servers, not users
            mine = users[self.edge_of_user[users] == edge]
            view = self.edge_state(state, edge)
            profile = torch.zeros(self.ctx.data.num_items)
            if len(mine) == 0:
                self._reports.append(RoundReport())
            else:
                uploads = self.inner.client_round(view, mine, generator)
                profile.index_add_(0, uploads.pair_item, torch.ones(len(uploads.pair_item)))
                self._reports.append(self.inner.server_aggregate(view, uploads))
            self._profiles.append(profile)
        return None

    def server_aggregate(self, state: RecState, uploads: None) -> RoundReport:
        """Edge-to-edge exchange with similarity-selected neighbours; no central server."""
        cfg, value_dtype = self.ctx.cfg.decentralized, self.ctx.cfg.train.value_dtype
        num_edges, num_items = cfg.num_edges, self.ctx.data.num_items
        profiles = torch.stack(self._profiles)  # [E, I]
        touched = profiles > 0
        candidates = torch.ones(num_edges, num_edges, dtype=torch.bool)
        if cfg.selection == "similarity":
            neighbours = threshold_select(overlap_cosine(profiles), candidates, cfg.delta, 1, cfg.neighbours)
        else:
            gen = torch.Generator().manual_seed(self.ctx.cfg.seed + int(profiles.sum()))
            neighbours = random_select(candidates, cfg.neighbours, gen)
        # Flat update of each edge: item rows then dense tensors; mask: touched rows, all dense coordinates.
        names = list(state.shared)
        after = torch.cat([state.shared[k].reshape(num_edges, -1) for k in names], dim=1)
        sent = torch.cat([touched.unsqueeze(2).expand(-1, -1, state.shared["item"].shape[2]).reshape(num_edges, -1)
                           if k == "item" else torch.ones(num_edges, state.shared[k][0].numel(), dtype=torch.bool)
                           for k in names], dim=1)
        update_bytes = encoded_sizes(sent.sum(1), after.shape[1], value_dtype)
        profile_bytes = encoded_sizes(touched.sum(1), num_items, value_dtype)
        peer = int(profile_bytes.sum()) * (num_edges - 1) + int((neighbours.long() * update_bytes[None, :]).sum())
        mixed = []
        for edge in range(num_edges):
            group = torch.cat([torch.tensor([edge]), torch.nonzero(neighbours[edge]).flatten()])
            mean, count = masked_average(after[group], sent[group])
            mixed.append(torch.where(count > 0, mean, after[edge]))
        mixed_t = torch.stack(mixed)
        offset = 0
        for k in names:
            size = state.shared[k][0].numel()
            state.shared[k].copy_(mixed_t[:, offset: offset + size].reshape(state.shared[k].shape))
            offset += size
        up = sum(r.bytes_up for r in self._reports)
        down = sum(r.bytes_down for r in self._reports)
        losses = [r.loss for r in self._reports if r.bytes_up]
        return RoundReport(bytes_up=up, bytes_down=down, bytes_peer=peer, loss=sum(losses) / max(len(losses), 1),
                           extra={"mean_neighbours": float(neighbours.sum(1).float().mean())})

    def scoring_state(self, state: RecState, generator: torch.Generator) -> RecState:
        """As `FederatedRecommender.scoring_state`, each user refitting against its own edge's model."""
        if self.ctx.cfg.train.eval_user_epochs == 0:
            return state
        assert state.user is not None
        user = state.user.clone()
        for edge in range(self.ctx.cfg.decentralized.num_edges):
            mine = torch.nonzero(self.edge_of_user == edge).flatten()
            if len(mine):
                user[mine] = self.inner.refit_user_rows(self.edge_state(state, edge), mine, generator)
        return RecState(state.shared, user)

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        out = torch.empty(len(user))
        for edge in range(self.ctx.cfg.decentralized.num_edges):
            sel = self.edge_of_user[user] == edge
            if bool(sel.any()):
                out[sel] = self.inner.predict(self.edge_state(state, edge), user[sel], item[sel], generator)
        return out


def build_mf(ctx: Context) -> Decentralized:
    return Decentralized("dfedmf", FederatedRecommender("fedmf", ctx.model("mf"), ctx), ctx)


def build_ncf(ctx: Context) -> Decentralized:
    return Decentralized("dfedncf", FederatedRecommender("fedncf", ctx.model("neumf"), ctx), ctx)
