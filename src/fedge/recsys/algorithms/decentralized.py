"""Decentralized federated recommendation over edge servers (paper section II.C, decentralized architecture).

Users are split over `num_edges` edge servers (balanced, from stream `recsys-edges`). Each round every edge runs
the inner client-server algorithm (fedmf or fedncf) with its own users and its own copy of the shared model, its
users' requests, downloads and uploads crossing the device-edge link (`fedge.recsys.exchange`); then the edges,
with no central server, exchange updates with neighbours over the edge-edge link:

1. each edge sends every other edge its round profile — how many of its users' uploads kept each item row, as it
   received them — as a sparse vector (`Kind.PROBE`, a `Models` body with its mask);
2. each edge scores the others with `fedge.core.similarity.overlap_cosine` of its own and the received profiles
   and keeps its neighbours with `fedge.core.neighbours.threshold_select` (score ≥ δ, at most k, at least one) or,
   as a baseline, `random_select` (noise from stream `recsys-neighbours`, per edge and round);
3. each edge asks its chosen neighbours for their model (`Kind.REQUEST`, an empty body); each asked neighbour
   sends its updated rows (the items its users touched this round + dense tensors; `Kind.MODEL`, masked) and the
   edge replaces each coordinate by the average over itself and the neighbours that sent it (`masked_average`,
   from the received messages only; D-PSGD-style mixing, Lian et al. 2017, restricted to the touched items).
"""

from __future__ import annotations

import torch

from fedge.core.aggregation import masked_average
from fedge.core.neighbours import random_select, threshold_select
from fedge.core.similarity import overlap_cosine
from fedge.messaging import Kind, Models, Requests, Role, route
from fedge.recsys.algorithms.base import Context, RecState, RoundReport
from fedge.recsys.algorithms.federated import FederatedRecommender
from fedge.recsys.draws import Draws
from fedge.recsys.exchange import Endpoint


class Decentralized:
    def __init__(self, name: str, inner: FederatedRecommender, ctx: Context) -> None:
        self.name = name
        self.inner = inner
        self.model = inner.model
        self.ctx = ctx
        num_users = ctx.data.num_users
        keys = ctx.streams.uniform("recsys-edges", 0, torch.arange(num_users), 1)[:, 0]
        rank = torch.empty(num_users, dtype=torch.long)
        rank[torch.argsort(keys, stable=True)] = torch.arange(num_users)
        self.edge_of_user = rank % ctx.cfg.decentralized.num_edges
        self._losses: list[float] = []  # this round's mean local loss, per edge with users
        self._profiles: list[torch.Tensor] = []  # this round's received item counts, one per edge

    def edge_state(self, state: RecState, edge: int) -> RecState:
        """Edge `edge`'s view (in-place updates write through to the stacked tensors)."""
        return RecState({k: v[edge] for k, v in state.shared.items()}, state.user)

    def init_state(self, generator: torch.Generator) -> RecState:
        base = self.inner.init_state(generator)
        num_edges = self.ctx.cfg.decentralized.num_edges
        shared = {k: v.unsqueeze(0).repeat(num_edges, *([1] * v.dim())) for k, v in base.shared.items()}
        return RecState(shared, base.user)

    def client_round(self, state: RecState, users: torch.Tensor, rnd: int) -> None:
        """Users train with their own edge; each edge aggregates the uploads it received."""
        self._losses, self._profiles = [], []
        for edge in range(self.ctx.cfg.decentralized.num_edges):  # a loop over edge servers, not users
            mine = users[self.edge_of_user[users] == edge]
            view = self.edge_state(state, edge)
            profile = torch.zeros(self.ctx.data.num_items)
            if len(mine):
                at = Endpoint(Role.EDGE, edge)
                uploads = self.inner.client_round(view, mine, rnd, at)
                assert uploads is not None
                profile = self.inner.receive(view, uploads, rnd, at).item_count
                self._losses.append(uploads.loss)
            self._profiles.append(profile)
        return None

    def _similarity(self, profiles: torch.Tensor, got_profiles: Models, receivers: torch.Tensor,
                    senders: torch.Tensor) -> torch.Tensor:
        """[E, E]: row e scored by edge e from its own profile and the profiles it received."""
        num_edges = len(profiles)
        rows = []
        for edge in range(num_edges):
            known = profiles.clone()
            known[torch.arange(num_edges) != edge] = 0.0
            mine = torch.nonzero(receivers == edge).flatten()
            known[senders[mine]] = got_profiles.values.index_select(0, got_profiles.slot[mine])
            rows.append(overlap_cosine(known)[edge])
        return torch.stack(rows)

    def server_aggregate(self, state: RecState, uploads: None, rnd: int) -> RoundReport:
        """Edge-to-edge exchange with selected neighbours, as messages; no central server."""
        cfg, value_dtype = self.ctx.cfg.decentralized, self.ctx.cfg.train.value_dtype
        transport, num_edges = self.ctx.transport, cfg.num_edges
        profiles = torch.stack(self._profiles)  # [E, I]
        edges = torch.arange(num_edges)
        to, frm = edges.repeat_interleave(num_edges), edges.repeat(num_edges)
        to, frm = to[to != frm], frm[to != frm]  # every edge to every other, by receiver then sender
        got = transport.send(route(Kind.PROBE, rnd, Role.EDGE, Role.EDGE, frm, to),
                             Models(profiles, frm, profiles > 0, value_dtype))
        assert isinstance(got.body, Models)
        similarity = self._similarity(profiles, got.body, got.route.receivers, got.route.senders)
        candidates = torch.ones(num_edges, num_edges, dtype=torch.bool)
        if cfg.selection == "similarity":
            neighbours = threshold_select(similarity, candidates, cfg.delta, 1, cfg.neighbours)
        else:
            noise = self.ctx.streams.uniform("recsys-neighbours", rnd, edges, num_edges)
            neighbours = random_select(candidates, cfg.neighbours, noise)
        askers, asked = torch.nonzero(neighbours, as_tuple=True)  # i receives from j
        request = transport.send(route(Kind.REQUEST, rnd, Role.EDGE, Role.EDGE, askers, asked),
                                 Requests(len(askers)))
        # Flat model of each edge: item rows then dense tensors; mask: touched rows, all dense coordinates.
        names = list(state.shared)
        touched = profiles > 0
        width = state.shared["item"].shape[2]
        after = torch.cat([state.shared[k].reshape(num_edges, -1) for k in names], dim=1)
        sent = torch.cat([touched.unsqueeze(2).expand(-1, -1, width).reshape(num_edges, -1)
                          if k == "item" else torch.ones(num_edges, state.shared[k][0].numel(), dtype=torch.bool)
                          for k in names], dim=1)
        answer = request.route.receivers
        got = transport.send(route(Kind.MODEL, rnd, Role.EDGE, Role.EDGE, answer, request.route.senders),
                             Models(after, answer, sent, value_dtype))
        body = got.body
        assert isinstance(body, Models) and body.masks is not None
        mixed = []
        for edge in range(num_edges):
            mine = torch.nonzero(got.route.receivers == edge).flatten()  # by sender (the requests were sorted)
            values = torch.cat([after[edge: edge + 1], body.values.index_select(0, body.slot[mine])])
            masks = torch.cat([sent[edge: edge + 1], body.masks.index_select(0, body.slot[mine])])
            mean, count = masked_average(values, masks)
            mixed.append(torch.where(count > 0, mean, after[edge]))
        mixed_t = torch.stack(mixed)
        offset = 0
        for k in names:
            size = state.shared[k][0].numel()
            state.shared[k].copy_(mixed_t[:, offset: offset + size].reshape(state.shared[k].shape))
            offset += size
        return RoundReport(loss=sum(self._losses) / max(len(self._losses), 1),
                           extra={"mean_neighbours": float(neighbours.sum(1).float().mean())})

    def scoring_state(self, state: RecState, draws: Draws) -> RecState:
        """As `FederatedRecommender.scoring_state`, each user refitting against its own edge's model."""
        if self.ctx.cfg.train.eval_user_epochs == 0:
            return state
        assert state.user is not None
        user = state.user.clone()
        for edge in range(self.ctx.cfg.decentralized.num_edges):
            mine = torch.nonzero(self.edge_of_user == edge).flatten()
            if len(mine):
                user[mine] = self.inner.refit_user_rows(self.edge_state(state, edge), mine, draws)
        return RecState(state.shared, user)

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor, draws: Draws) -> torch.Tensor:
        out = torch.empty(len(user))
        for edge in range(self.ctx.cfg.decentralized.num_edges):
            sel = self.edge_of_user[user] == edge
            if bool(sel.any()):
                out[sel] = self.inner.predict(self.edge_state(state, edge), user[sel], item[sel], draws)
        return out


def build_mf(ctx: Context) -> Decentralized:
    return Decentralized("dfedmf", FederatedRecommender("fedmf", ctx.model("mf"), ctx), ctx)


def build_ncf(ctx: Context) -> Decentralized:
    return Decentralized("dfedncf", FederatedRecommender("fedncf", ctx.model("neumf"), ctx), ctx)
