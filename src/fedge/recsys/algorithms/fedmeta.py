"""fedmeta: a shared initialisation meta-learned across users, adapted per user before use.

First-order MAML in federated form (FedMeta, Chen et al. 2018; Per-FedAvg, Fallah et al. 2020). The whole model,
including an *initial user row* `user0`, is shared; devices keep no state between rounds. In each local meta-step a
client adapts its copy with `inner_steps` SGD steps on a support minibatch, evaluates the query minibatch at the
adapted parameters and applies that (first-order) gradient to its copy of the initialisation with Adam. The server
averages the deltas (items over the clients that touched them). Downloads (the rows each client will touch, or the
whole model) and uploads cross the transport as in fedmf (`fedge.recsys.exchange`). Before evaluation every user
adapts the initialisation with `eval_steps` SGD steps on its own training data — on its device, batched over users
here.
"""

from __future__ import annotations

import torch

from fedge.recsys.algorithms.base import Context, RecState, RoundReport
from fedge.recsys.draws import Draws
from fedge.recsys.exchange import ClientServer
from fedge.recsys.local import (
    Copies,
    Pairs,
    RoundBatch,
    client_mean_loss,
    make_batch,
    make_copies,
    make_pairs,
    minibatch_ids,
    working_copies,
)
from fedge.recsys.models import Segments
from fedge.recsys.wire import Uploads


def _sgd(copies: Copies, grads: list[torch.Tensor], lr: float) -> Copies:
    """θ - lr·g for every tensor, as new leaf tensors (first-order: no gradient through the step)."""
    new = [(t - lr * g).detach().requires_grad_(True) for t, g in zip(copies.tensors(), grads, strict=True)]
    return Copies(new[0], new[1], dict(zip(copies.dense, new[2:], strict=True)))


class FedMeta:
    def __init__(self, ctx: Context) -> None:
        self.name = "fedmeta"
        self.ctx = ctx
        self.model = ctx.model(ctx.cfg.meta.model)
        self.link = ClientServer(ctx.transport, ctx.cfg.train.value_dtype, ctx.cfg.train.upload)

    def init_state(self, generator: torch.Generator) -> RecState:
        shared = self.model.init_shared(self.ctx.data.num_items, generator)
        shared["user0"] = self.model.init_user(1, generator)[0]
        return RecState(shared, None)

    def _copies(self, state: RecState, num_clients: int, pairs: Pairs) -> Copies:
        model_part = {k: v for k, v in state.shared.items() if k != "user0"}
        user0 = state.shared["user0"].unsqueeze(0).expand(num_clients, -1)
        return make_copies(user0, model_part, pairs)

    def _adapt(self, copies: Copies, batch: RoundBatch, pairs: Pairs, sel: torch.Tensor, steps: int) -> Copies:
        meta, data = self.ctx.cfg.meta, self.ctx.data
        for _ in range(steps):
            tensors = [t.requires_grad_(True) for t in copies.tensors()]
            loss = client_mean_loss(self.model, copies, batch, pairs, sel, data.protocol, self.ctx.cfg.train.l2)
            copies = _sgd(copies, list(torch.autograd.grad(loss, tensors)), meta.inner_lr)
        return copies

    def client_round(self, state: RecState, users: torch.Tensor, rnd: int) -> Uploads:
        data, train = self.ctx.data, self.ctx.cfg.train
        draws = self.ctx.draws("recsys-train", rnd)
        batch = make_batch(data, users, self.ctx.cfg.data.num_negatives, draws)
        pairs = make_pairs(batch.client, batch.item, data.num_items)
        held = self.link.download(state.shared, users, pairs, rnd)
        theta = working_copies(held.dense["user0"], held.item_rows,
                               {k: v for k, v in held.dense.items() if k != "user0"})
        params = [t.requires_grad_(True) for t in theta.tensors()]
        optimiser = torch.optim.Adam(params, lr=train.lr, fused=True)
        total = 0.0
        shuffle = draws.child("shuffle")
        for epoch in range(train.local_epochs):
            ids = minibatch_ids(batch, 2 * train.local_batches, shuffle, epoch)
            for step in range(train.local_batches):
                support = torch.nonzero(ids == 2 * step).flatten()
                query = torch.nonzero(ids == 2 * step + 1).flatten()
                adapted = self._adapt(theta, batch, pairs, support, self.ctx.cfg.meta.inner_steps)
                loss = client_mean_loss(self.model, adapted, batch, pairs, query, data.protocol, train.l2)
                grads = torch.autograd.grad(loss, adapted.tensors())
                optimiser.zero_grad(set_to_none=True)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optimiser.step()
                total += float(loss.detach()) / len(users)
        dense_delta = {k: v.detach() - held.dense[k] for k, v in theta.dense.items()}
        dense_delta["user0"] = theta.user.detach() - held.dense["user0"]
        item_delta = theta.item.detach() - held.item_rows
        return Uploads(len(users), data.num_items, pairs.client, pairs.item, item_delta, dense_delta,
                       mode=train.upload, loss=total / (train.local_epochs * train.local_batches), users=users)

    def server_aggregate(self, state: RecState, uploads: Uploads | None, rnd: int) -> RoundReport:
        assert uploads is not None
        got = self.link.upload(uploads, rnd)
        state.shared["item"].add_(got.item_mean, alpha=self.ctx.cfg.train.server_lr)
        for name, delta in got.dense_mean.items():
            state.shared[name].add_(delta, alpha=self.ctx.cfg.train.server_lr)
        return RoundReport(loss=uploads.loss)

    def scoring_state(self, state: RecState, draws: Draws) -> RecState:
        return state  # the per-user adaptation (`eval_steps`) happens inside `predict`, query by query

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor, draws: Draws,
                max_queries: int = 1 << 17) -> torch.Tensor:
        """Adapt the initialisation on each queried user's own training data (fresh negatives from `draws`, keyed by
        user: a user adapts the same way in whichever group it is scored), then score its pairs."""
        data = self.ctx.data
        users, slot = torch.unique(user, return_inverse=True)
        out = torch.empty(len(user))
        per_user = torch.bincount(slot, minlength=len(users))
        group, start = [], 0
        bounds = []
        for n, count in enumerate(per_user.tolist()):  # groups of users, not a per-user training loop
            group.append(n)
            start += count
            if start >= max_queries:
                bounds.append(group)
                group, start = [], 0
        if group:
            bounds.append(group)
        for group in bounds:
            g = torch.tensor(group)
            in_group = torch.isin(slot, g)
            local = torch.searchsorted(g, slot[in_group])
            batch = make_batch(data, users[g], self.ctx.cfg.data.num_negatives, draws)
            n_train = len(batch.item)
            pairs = make_pairs(torch.cat([batch.client, local]), torch.cat([batch.item, item[in_group]]),
                               data.num_items)
            copies = self._copies(state, len(g), pairs)
            copies = self._adapt(copies, batch, pairs, torch.arange(n_train), self.ctx.cfg.meta.eval_steps)
            with torch.no_grad():
                inv = pairs.inv[n_train:]
                seg = Segments(local, len(g))
                out[in_group] = self.model.predict(copies.user[local], copies.item[inv], copies.dense, seg)
        return out


def build(ctx: Context) -> FedMeta:
    return FedMeta(ctx)
