"""Client-server federated recommendation with private user rows (the shared part of fedmf and fedncf).

Per round, every selected user (a client) asks for and downloads the rows of the items it will touch (or the whole
catalogue), trains its private user row together with its copies of those item rows and of the dense shared
tensors, keeps the new user row on the device, and uploads only the deltas of the shared part. The aggregator
averages each item over the clients that touched it and the dense tensors over all clients, reading only the
messages it received (`fedge.recsys.exchange`). Decentralized runs use the same rounds with an edge server as the
aggregator (`at`).

Under user-level DP (`ctx.privacy`, `fedge.recsys.dp`; McMahan et al. 2018) each client clips its whole upload to C
before sending it, and the server replaces the averages by the noisy sums over the whole model divided by the
expected number of participants; a round nobody was sampled for still releases noise.
"""

from __future__ import annotations

import torch

from fedge.recsys.algorithms.base import Context, RecState, RoundReport, predict_with
from fedge.recsys.draws import Draws
from fedge.recsys.exchange import SERVER, ClientServer, Endpoint
from fedge.recsys.local import fit_user_rows, make_batch, make_copies, make_pairs, train_copies, working_copies
from fedge.recsys.models import Model
from fedge.recsys.secure import nothing, secure_uploads
from fedge.recsys.server_opt import ServerOptimizer
from fedge.recsys.wire import Aggregate, Uploads


class FederatedRecommender:
    """FedAvg-style training of `model` with user rows that never leave the device."""

    def __init__(self, name: str, model: Model, ctx: Context) -> None:
        self.name = name
        self.model = model
        self.ctx = ctx
        train = ctx.cfg.train
        self.link = ClientServer(ctx.transport, train.value_dtype, train.upload)
        # secure.aggregation: secagg | secagg+: masked whole-catalogue uploads (fedge.recsys.secure); None: plaintext
        self.secure = secure_uploads(ctx.cfg, ctx.data.num_users, ctx.transport, ctx.privacy,
                                     distributed=ctx.hosting is not None)
        # one server optimiser per shared model: keyed by its item table's storage (one per edge when decentralized)
        self._server_opts: dict[int, ServerOptimizer] = {}

    def server_optimizer(self, state: RecState) -> ServerOptimizer:
        key = state.shared["item"].data_ptr()
        if key not in self._server_opts:
            t = self.ctx.cfg.train
            self._server_opts[key] = ServerOptimizer(t.server_optimizer, t.server_lr, t.server_momentum,
                                                     t.server_beta1, t.server_beta2, t.server_eps)
        return self._server_opts[key]

    def init_state(self, generator: torch.Generator) -> RecState:
        """The shared model from `generator`; each device initialises its own user row from its own stream
        (`recsys-init-user`, keyed by user id), whatever the order users are stored in."""
        data = self.ctx.data
        self._server_opts.clear()  # a fresh run starts with fresh server-optimiser state
        shared = self.model.init_shared(data.num_items, generator)
        streams = self.ctx.streams
        rows = [self.model.init_user(1, streams.generator("recsys-init-user", u)) for u in range(data.num_users)]
        return RecState(shared, torch.cat(rows))

    def client_round(self, state: RecState, users: torch.Tensor, rnd: int, at: Endpoint = SERVER) -> Uploads | None:
        """Download, local training and the deltas each client will upload (user rows stay in `state.user`),
        clipped on the device under user-level DP. None when nobody takes part (possible with Poisson sampling)."""
        if len(users) == 0:
            return None
        everyone, users = users, self.ctx.hosted(users)  # a distributed run trains the clients hosted here
        data, train = self.ctx.data, self.ctx.cfg.train
        draws = self.ctx.draws("recsys-train", rnd)
        batch = make_batch(data, users, self.ctx.cfg.data.num_negatives, draws)
        pairs = make_pairs(batch.client, batch.item, data.num_items)
        held = self.link.download(state.shared, users, pairs, rnd, at, everyone)
        assert state.user is not None
        copies = working_copies(state.user[users], held.item_rows, held.dense)
        loss = train_copies(self.model, copies, batch, pairs, protocol=data.protocol, epochs=train.local_epochs,
                            batches=train.local_batches, lr=train.lr, l2=train.l2, draws=draws,
                            optimizer=train.local_optimizer, user_epochs=train.user_epochs,
                            eps=train.adam_eps, dense_lr=train.dense_lr)
        state.user[users] = copies.user.detach()  # stays on the device
        item_delta = copies.item.detach() - held.item_rows
        dense_delta = {k: v.detach() - held.dense[k] for k, v in copies.dense.items()}
        uploads = Uploads(len(users), data.num_items, pairs.client, pairs.item, item_delta, dense_delta,
                          mode=train.upload, loss=self.ctx.round_mean(loss, users, everyone), users=users,
                          everyone=everyone)
        return uploads if self.ctx.privacy is None else self.ctx.privacy.clip(uploads)

    def receive(self, state: RecState, uploads: Uploads | None, rnd: int, at: Endpoint = SERVER) -> Aggregate:
        """The uploads cross to the aggregator, which steps its model with the average of what it received (under
        user-level DP: with the noisy sum over the whole model divided by the expected number of participants;
        under secure aggregation as masked whole-catalogue vectors of which it unmasks only the sums,
        `fedge.recsys.secure`, and a round that released nothing steps nothing)."""
        privacy = self.ctx.privacy
        if self.secure is not None:  # the server unmasks only the sums (per-item means); None: nothing released
            secured = self.secure.aggregate(uploads, rnd, (at.role, at.index))
            if secured is None:
                return nothing(state.shared)
            got = secured
        elif privacy is None:
            assert uploads is not None
            got = self.link.upload(uploads, rnd, at)
        else:
            got = privacy.release(state.shared, None if uploads is None else self.link.gather(uploads, rnd, at), rnd)
        self.server_optimizer(state).step(state.shared, got.item_mean, got.item_count, got.dense_mean)
        return got

    def server_aggregate(self, state: RecState, uploads: Uploads | None, rnd: int) -> RoundReport:
        assert uploads is not None or self.ctx.privacy is not None
        self.receive(state, uploads, rnd)
        return RoundReport(loss=0.0 if uploads is None else uploads.loss)

    def refit_user_rows(self, state: RecState, users: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Each of `users` refits a copy of its private row to the current shared model on its own training data
        (fresh negatives; `eval_user_epochs` epochs at `eval_user_lr`), on its device, batched over users."""
        data, train = self.ctx.data, self.ctx.cfg.train
        assert state.user is not None
        batch = make_batch(data, users, self.ctx.cfg.data.num_negatives, draws)
        pairs = make_pairs(batch.client, batch.item, data.num_items)
        copies = make_copies(state.user[users], state.shared, pairs, expand_dense=False)
        fit_user_rows(self.model, copies, batch, pairs, protocol=data.protocol,
                      steps=train.eval_user_epochs * train.local_batches, batches=train.local_batches,
                      lr=train.eval_user_lr or train.lr, l2=train.l2, draws=draws, eps=train.adam_eps)
        return copies.user

    def scoring_state(self, state: RecState, draws: Draws) -> RecState:
        """Training rows as they are, or (`eval_user_epochs` > 0) refitted copies: a user row last moved together
        with the client's own drifting copies of the shared model, not with the averaged model it now scores with.
        The training state is not touched, so results do not depend on how often a run evaluates."""
        assert state.user is not None
        everyone = torch.arange(self.ctx.data.num_users)
        users = self.ctx.hosted(everyone)  # a distributed run: each process its own users, then joined
        if self.ctx.cfg.train.eval_user_epochs == 0:
            return state if self.ctx.hosting is None else RecState(
                state.shared, self.ctx.complete_rows(state.user[users], users))
        return RecState(state.shared, self.ctx.complete_rows(self.refit_user_rows(state, users, draws), users))

    def predict(self, state: RecState, user: torch.Tensor, item: torch.Tensor, draws: Draws) -> torch.Tensor:
        assert state.user is not None
        return predict_with(self.model, state.user, state.shared, user, item)
