"""Centralized MF and NeuMF on pooled data: the quality reference for the federated variants.

Same model, loss, negatives and evaluation as the federated runs; all interactions are pooled on one server and
trained with minibatch Adam, one pass per round (minibatch order from stream `recsys-central-order`). Nothing
crosses a transport, so no bytes are counted.
"""

from __future__ import annotations

import torch

from fedge.recsys.algorithms.base import Context, RecState, RoundReport, predict_with
from fedge.recsys.draws import Draws
from fedge.recsys.local import Copies, Pairs, example_losses, make_batch
from fedge.recsys.models import Model


class Centralized:
    def __init__(self, name: str, model: Model, ctx: Context) -> None:
        self.name = name
        self.model = model
        self.ctx = ctx
        self._optimiser: torch.optim.Optimizer | None = None
        self._params: Copies | None = None
        self._last_loss = 0.0

    def init_state(self, generator: torch.Generator) -> RecState:
        data = self.ctx.data
        state = RecState(self.model.init_shared(data.num_items, generator), self.model.init_user(data.num_users,
                                                                                                 generator))
        dense = {k: v for k, v in state.shared.items() if k != "item"}
        self._params = Copies(state.user, state.shared["item"], dense, pooled=True)
        for t in self._params.tensors():
            t.requires_grad_(True)
        self._optimiser = torch.optim.Adam(self._params.tensors(), lr=self.ctx.cfg.train.lr,
                                           eps=self.ctx.cfg.train.adam_eps, fused=True)
        return state

    def client_round(self, state: RecState, users: torch.Tensor, rnd: int) -> None:
        data, cfg = self.ctx.data, self.ctx.cfg
        assert self._params is not None and self._optimiser is not None
        batch = make_batch(data, users, cfg.data.num_negatives, self.ctx.draws("recsys-train", rnd))
        # Pooled training: the "client" of an example is its global user, its "pair" row is the global item row.
        pooled = type(batch)(torch.arange(data.num_users), users[batch.client], batch.item, batch.target, batch.index)
        pairs = Pairs(torch.zeros(0, dtype=torch.int64), batch.item, batch.item)
        order = torch.randperm(len(batch.item), generator=self.ctx.draws("recsys-central-order", rnd).generator())
        size = cfg.train.central_batch_size
        total = 0.0
        for lo in range(0, len(order), size):
            sel = order[lo: lo + size]
            loss = example_losses(self.model, self._params, pooled, pairs, sel, data.protocol, cfg.train.l2).mean()
            self._optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self._optimiser.step()
            total += float(loss.detach()) * len(sel)
        self._last_loss = total / max(len(order), 1)
        return None

    def server_aggregate(self, state: RecState, uploads: None, rnd: int) -> RoundReport:
        return RoundReport(loss=self._last_loss)

    def scoring_state(self, state: RecState, draws: Draws) -> RecState:
        return state  # user rows were trained jointly with the model: nothing to refit

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor, draws: Draws) -> torch.Tensor:
        assert state.user is not None
        return predict_with(self.model, state.user.detach(), {k: v.detach() for k, v in state.shared.items()},
                            user, item)


def build_mf(ctx: Context) -> Centralized:
    return Centralized("central-mf", ctx.model("mf"), ctx)


def build_neumf(ctx: Context) -> Centralized:
    return Centralized("central-neumf", ctx.model("neumf"), ctx)
