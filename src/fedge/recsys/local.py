"""Batched local training: every client of a round trains its private copy at once.

Clients never share a tensor during local training, so the copies are stacked and trained as one graph:

* user rows `[B, du]` (one per client),
* item rows `[P, di]`, one per (client, item) *pair* the client touches this round — so each client has its own
  copy of exactly the items it uses, and nothing else (no `[B, I, di]` table is ever built),
* dense shared tensors (MLP, biases) copied per client `[B, ...]`.

Each interaction gathers its client's rows; the loss is the sum over clients of each client's mean loss, so the
gradient of client b's copy is exactly client b's own gradient. Adam is coordinate-wise, so one Adam over the stacked
copies is B independent local Adams. This is local training of FedAvg (McMahan et al. 2017) without a Python loop
over users.

Every random draw (negatives, minibatch order) is keyed by (seed, purpose, round, user, draw number) through
`fedge.recsys.draws.Draws`, so a user trains the same way whichever users share its round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedge.core.aggregation import positions_within
from fedge.recsys.draws import Draws
from fedge.recsys.models import Model, Segments
from fedge.recsys.protocol import RecData, sample_negatives


@dataclass
class RoundBatch:
    """The training examples of one round: interaction n belongs to client `client[n]` (index into `users`) and is
    that client's example number `index[n]` (what its random draws are keyed by)."""

    users: torch.Tensor  # [B] global user ids
    client: torch.Tensor  # [n]
    item: torch.Tensor  # [n]
    target: torch.Tensor  # [n]
    index: torch.Tensor  # [n]


@dataclass
class Pairs:
    """Unique (client, item) pairs, sorted client-major; `inv[n]` is the pair of interaction n."""

    client: torch.Tensor  # [P]
    item: torch.Tensor  # [P]
    inv: torch.Tensor  # [n]


@dataclass
class Copies:
    """Every client's private working copy of the model for this round."""

    user: torch.Tensor  # [B, du]
    item: torch.Tensor  # [P, di]
    dense: dict[str, torch.Tensor]  # name -> [B, ...] per client, or the tensor itself when `pooled`
    pooled: bool = False  # one copy shared by every example (centralized training; fitting user rows only)

    def tensors(self) -> list[torch.Tensor]:
        return [self.user, self.item, *self.dense.values()]


def make_batch(data: RecData, users: torch.Tensor, num_negatives: int, draws: Draws) -> RoundBatch:
    """The users' own training interactions plus, for implicit feedback, `num_negatives` fresh negatives each
    (stream `<purpose>/negatives`)."""
    client, rows = data.user_rows(users)
    item, target = data.train_item[rows], data.train_target[rows]
    index = rows - data.user_ptr[users][client]  # client-major: a client's positives are numbered 0, 1, ...
    if data.protocol == "implicit" and num_negatives > 0:
        neg_client = client.repeat_interleave(num_negatives)
        neg_index = positions_within(neg_client)
        neg_item = sample_negatives(data, users[neg_client], draws.child("negatives"), neg_index)
        positives = torch.bincount(client, minlength=len(users))
        client = torch.cat([client, neg_client])
        item = torch.cat([item, neg_item])
        target = torch.cat([target, torch.zeros(len(neg_item))])
        index = torch.cat([index, positives[neg_client] + neg_index])
    return RoundBatch(users, client, item, target, index)


def make_pairs(client: torch.Tensor, item: torch.Tensor, num_items: int) -> Pairs:
    keys, inv = torch.unique(client * num_items + item, return_inverse=True)
    return Pairs(keys // num_items, keys % num_items, inv)


def working_copies(user_rows: torch.Tensor, item_rows: torch.Tensor, dense: dict[str, torch.Tensor]) -> Copies:
    """Each client's private working copy of what it holds: its user row, the item rows it downloaded (one per
    pair) and its downloaded dense tensors (`[B, ...]`, per client)."""
    return Copies(user_rows.clone(), item_rows.clone(), {k: v.clone() for k, v in dense.items()})


def make_copies(user_rows: torch.Tensor, shared: dict[str, torch.Tensor], pairs: Pairs,
                expand_dense: bool = True) -> Copies:
    """Per-client copies of the user rows and touched item rows; the dense tensors per client too, or (not
    `expand_dense`, for fitting only the user rows) one pooled copy shared by every client."""
    num_clients = len(user_rows)
    if not expand_dense:
        dense = {k: v.clone() for k, v in shared.items() if k != "item"}
        return Copies(user_rows.clone(), shared["item"][pairs.item].clone(), dense, pooled=True)
    dense = {k: v.unsqueeze(0).expand(num_clients, *v.shape).clone() for k, v in shared.items() if k != "item"}
    return Copies(user_rows.clone(), shared["item"][pairs.item].clone(), dense)


def example_losses(model: Model, copies: Copies, batch: RoundBatch, pairs: Pairs, sel: torch.Tensor,
                   protocol: str, l2: float) -> torch.Tensor:
    """Per-example loss (BCE on logits for implicit, squared error for explicit) plus L2 on the rows used."""
    c = batch.client[sel]
    u, v = copies.user[c], copies.item[pairs.inv[sel]]
    seg = None if copies.pooled else Segments(c, len(batch.users))
    pred = model.predict(u, v, copies.dense, seg)
    target = batch.target[sel]
    if protocol == "implicit":
        loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    else:
        loss = (pred - target) ** 2
    if l2 > 0:
        loss = loss + l2 * ((u * u).sum(1) + (v * v).sum(1))
    return loss


def client_mean_loss(model: Model, copies: Copies, batch: RoundBatch, pairs: Pairs, sel: torch.Tensor,
                     protocol: str, l2: float) -> torch.Tensor:
    """Σ_clients mean loss of that client's examples in `sel`: each copy gets its own client's gradient."""
    losses = example_losses(model, copies, batch, pairs, sel, protocol, l2)
    c = batch.client[sel]
    counts = torch.bincount(c, minlength=len(batch.users)).clamp_min(1)
    return (losses / counts[c]).sum()


def minibatch_ids(batch: RoundBatch, batches: int, draws: Draws, epoch: int) -> torch.Tensor:
    """Split every client's examples, in a fresh random order per epoch, into `batches` near-equal local
    minibatches (the order of a client's examples is drawn from its own stream)."""
    client, num_clients = batch.client, len(batch.users)
    noise = draws.uniform(batch.users[client], batch.index, epoch)  # multiples of 2⁻²⁴
    # one sort by (client, noise); ties in the noise keep the order of the client's own examples
    order = torch.argsort(client * (1 << 24) + (noise * (1 << 24)).long(), stable=True)
    counts = torch.bincount(client, minlength=num_clients)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - starts[client[order]]
    return rank * batches // counts[client].clamp_min(1)


def fit_user_rows(model: Model, copies: Copies, batch: RoundBatch, pairs: Pairs, *, protocol: str, steps: int,
                  batches: int, lr: float, l2: float, draws: Draws, eps: float = 1e-8) -> None:
    """Fit only the private user rows (in place) to the frozen, freshly downloaded item rows and dense tensors:
    `steps` Adam steps, each on one of `batches` local minibatches (a fresh split every `batches` steps, from
    `draws`).

    A user row is a small convex-ish problem once the shared model is fixed, and every client solves its own:
    Adam is coordinate-wise and the loss a sum over clients, so the stacked rows are fitted independently.
    """
    # Every client's dense copy is still the downloaded shared tensor here, so one pooled copy serves them all
    # (a plain matmul instead of a per-client one: 1.04 -> 0.40 s per quarter-epoch step, NeuMF, 610 users).
    dense = copies.dense if copies.pooled else {k: v[0] for k, v in copies.dense.items()}
    frozen = Copies(copies.user, copies.item.detach(), {k: v.detach() for k, v in dense.items()}, pooled=True)
    frozen.user.requires_grad_(True)
    optimiser = torch.optim.Adam([frozen.user], lr=lr, eps=eps, fused=True)
    ids = torch.zeros(0, dtype=torch.long)
    for step in range(steps):
        if step % batches == 0:
            ids = minibatch_ids(batch, batches, draws, step // batches)
        loss = client_mean_loss(model, frozen, batch, pairs, torch.nonzero(ids == step % batches).flatten(),
                                protocol, l2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    frozen.user.requires_grad_(False)


def train_copies(model: Model, copies: Copies, batch: RoundBatch, pairs: Pairs, *, protocol: str, epochs: int,
                 batches: int, lr: float, l2: float, draws: Draws, optimizer: str = "adam",
                 user_epochs: int = 0, eps: float = 1e-8, dense_lr: float = 0.0) -> torch.Tensor:
    """Local training of all copies at once for `epochs` × `batches` steps; returns each client's last-epoch loss
    ([B]: the mean over its minibatches of its mean example loss), which a run averages over every process's
    clients in one fixed order (`fedge.recsys.algorithms.base.round_mean`).

    `adam`: each client minimises its mean loss with its own Adam (state reset every round).
    `sgd`: plain SGD where each item row takes the summed gradient of its own examples (per-example SGD, as in
    centralized MF) and the user row and dense tensors the client-mean gradient, so gradient magnitudes — small
    for examples already scored well — survive, which a freshly reset Adam (≈ sign descent) discards.
    `dense_lr` (0: `lr`) is the step of the dense shared tensors (MLP, output layer), which every client moves,
    unlike the rows. For fedncf on ml-latest-small no value other than `lr` helped (docs/recsys.md, third pass).
    `user_epochs` first fits the user row alone to the freshly downloaded (frozen) shared model, so that the private
    row tracks the global item table rather than only the client's own drifting copies.
    """
    if user_epochs > 0:
        fit_user_rows(model, copies, batch, pairs, protocol=protocol, steps=user_epochs * batches, batches=batches,
                      lr=lr, l2=l2, draws=draws.child("user-fit"), eps=eps)
    params = [t.requires_grad_(True) for t in copies.tensors()]
    step_sizes = [lr, lr] + [dense_lr or lr] * len(copies.dense)
    optimiser = None
    if optimizer == "adam":
        groups = [{"params": [p], "lr": size} for p, size in zip(params, step_sizes, strict=True)]
        optimiser = torch.optim.Adam(groups, lr=lr, eps=eps, fused=True)
    num_clients = len(batch.users)
    last = torch.zeros(num_clients)
    shuffle = draws.child("shuffle")
    for epoch in range(epochs):
        ids = minibatch_ids(batch, batches, shuffle, epoch)
        total = torch.zeros(num_clients)
        for step in range(batches):
            sel = torch.nonzero(ids == step).flatten()
            if len(sel) == 0:
                continue
            losses = example_losses(model, copies, batch, pairs, sel, protocol, l2)
            c = batch.client[sel]
            counts = torch.bincount(c, minlength=num_clients).clamp_min(1)
            loss = (losses / counts[c]).sum()  # client_mean_loss: each copy gets its own client's gradient
            total.index_add_(0, c, (losses.detach() / counts[c]))
            if optimiser is not None:
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            else:
                grads = torch.autograd.grad(loss, params)
                counts = torch.bincount(batch.client[sel], minlength=num_clients).clamp_min(1).to(loss.dtype)
                with torch.no_grad():
                    for n, (t, g, size) in enumerate(zip(params, grads, step_sizes, strict=True)):
                        # client-mean loss -> item rows scaled back to the per-example (summed) gradient
                        scale = counts[pairs.client][:, None] if n == 1 else 1.0
                        t.sub_(size * g * scale)
        last = total / batches
    for t in params:
        t.requires_grad_(False)
    return last


__all__ = ["Copies", "Pairs", "RoundBatch", "client_mean_loss", "example_losses", "fit_user_rows", "make_batch",
           "make_copies", "make_pairs", "minibatch_ids", "train_copies", "working_copies"]
