"""Item averaging counts only contributing clients; bytes are the codec's; batching equals per-user training."""

from __future__ import annotations

import pytest
import torch

from fedge.core.aggregation import masked_average
from fedge.core.codec import FRAME
from fedge.core.streams import Streams
from fedge.messaging import Ledger, make_transport
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.draws import Draws
from fedge.recsys.exchange import ClientServer
from fedge.recsys.local import make_batch, make_copies, make_pairs, train_copies
from fedge.recsys.runner import prepare
from fedge.recsys.wire import ClientRows, aggregate


def hand_uploads(mode: str) -> ClientRows:
    # 3 clients, 3 items, item rows of width 2, one dense scalar per client.
    pair_client = torch.tensor([0, 1, 2])
    pair_item = torch.tensor([0, 0, 1])
    item_delta = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    dense = {"mu": torch.tensor([[1.0], [2.0], [6.0]])}
    return ClientRows(3, 3, pair_client, pair_item, item_delta, dense, mode=mode, users=torch.tensor([4, 7, 9]))


def _received(uploads: ClientRows, transport: str):
    ledger = Ledger(10)
    got = ClientServer(make_transport(transport, ledger), "fp32", uploads.mode).upload(uploads, 1)
    return got, ledger


@pytest.mark.parametrize("transport", ["direct", "loopback"])
def test_item_average_counts_only_contributing_clients(transport: str) -> None:
    got, ledger = _received(hand_uploads("interacted"), transport)
    # item 0: clients 0 and 1 -> (1 + 3) / 2; item 1: client 2 alone -> 5; item 2: nobody -> 0.
    assert torch.equal(got.item_mean, torch.tensor([[2.0, 20.0], [5.0, 50.0], [0.0, 0.0]]))
    assert got.item_count.tolist() == [2.0, 1.0, 0.0]
    assert torch.equal(got.dense_mean["mu"], torch.tensor([3.0]))
    payloads = hand_uploads("interacted").payloads()
    assert ledger.bytes_by_link["device-server"] == sum(len(p) + FRAME.size for p in payloads)
    sent = torch.tensor([len(p) + FRAME.size for p in payloads], dtype=torch.float64)
    assert torch.equal(ledger.device_sent[[4, 7, 9]], sent) and ledger.device_sent.sum() == sent.sum()


@pytest.mark.parametrize("transport", ["direct", "loopback"])
def test_full_catalogue_mode_averages_over_all_clients(transport: str) -> None:
    uploads = hand_uploads("full")
    payloads = uploads.payloads()
    assert len({len(p) for p in payloads}) == 1  # same size for everyone: the touched set is not visible
    got, ledger = _received(uploads, transport)
    assert torch.allclose(got.item_mean[:, 0], torch.tensor([4.0 / 3, 5.0 / 3, 0.0]))
    assert got.item_count.tolist() == [3.0, 3.0, 3.0]
    assert ledger.total == sum(len(p) + FRAME.size for p in payloads)
    assert sum(len(p) for p in payloads) > sum(len(p) for p in hand_uploads("interacted").payloads())


def test_aggregation_equals_masked_average_of_the_payload_vectors(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create("fedmf", Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    uploads = algo.client_round(state, torch.arange(data.num_users), 1)
    vectors = [uploads.vector(b) for b in range(uploads.num_clients)]
    reference, _ = masked_average(torch.stack([v for v, _ in vectors]), torch.stack([m for _, m in vectors]))
    got = aggregate(uploads)
    width = uploads.item_dim
    assert torch.allclose(got.item_mean.reshape(-1), reference[: data.num_items * width], atol=1e-6)
    assert torch.allclose(got.dense_mean["mu"], reference[-1:], atol=1e-6)
    assert torch.equal(uploads.sizes(), torch.tensor([len(p) for p in uploads.payloads()]))


def test_server_leaves_untouched_items_alone(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create("fedmf", Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    before = state.shared["item"].clone()
    users = torch.tensor([0, 1])
    uploads = algo.client_round(state, users, 1)
    algo.server_aggregate(state, uploads, 1)
    touched = torch.zeros(data.num_items, dtype=torch.bool)
    touched[uploads.pair_item] = True
    assert torch.equal(state.shared["item"][~touched], before[~touched])
    assert not torch.equal(state.shared["item"][touched], before[touched])


def test_batched_local_training_equals_training_each_user_alone(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    for kind in ("mf", "neumf"):
        model = Context(cfg, data).model(kind)
        gen = torch.Generator().manual_seed(0)
        shared, user_rows = model.init_shared(data.num_items, gen), model.init_user(data.num_users, gen)
        users = torch.tensor([2, 5, 7])
        draws = Draws(Streams(0), "test", 3)
        batch = make_batch(data, users, 4, draws)

        def train(sel: torch.Tensor, batch=batch, model=model, shared=shared, user_rows=user_rows, draws=draws):
            keep = torch.isin(batch.client, sel)
            sub = type(batch)(batch.users[sel], torch.searchsorted(sel, batch.client[keep]), batch.item[keep],
                              batch.target[keep], batch.index[keep])
            pairs = make_pairs(sub.client, sub.item, data.num_items)
            copies = make_copies(user_rows[sub.users], shared, pairs)
            # two minibatches per epoch: each user's split comes from its own stream, whoever trains beside it
            train_copies(model, copies, sub, pairs, protocol="implicit", epochs=3, batches=2, lr=0.05, l2=0.0,
                         draws=draws)
            return copies, pairs

        together, pairs = train(torch.arange(3))
        for b in range(3):
            alone, _ = train(torch.tensor([b]))
            assert torch.allclose(together.user[b], alone.user[0], atol=1e-5)
            assert torch.allclose(together.item[pairs.client == b], alone.item, atol=1e-5)
            for name, t in together.dense.items():
                assert torch.allclose(t[b], alone.dense[name][0], atol=1e-5)


def test_dense_lr_sets_only_the_dense_tensors_step(tiny, tiny_config, tmp_path) -> None:
    """With Adam the first step moves every coordinate by about its group's lr: item rows by `lr` whatever
    `dense_lr` is, the MLP by `dense_lr`."""
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    model = Context(cfg, data).model("neumf")
    gen = torch.Generator().manual_seed(0)
    shared, user_rows = model.init_shared(data.num_items, gen), model.init_user(data.num_users, gen)
    batch = make_batch(data, torch.tensor([1, 4]), 4, Draws(Streams(0), "test", 3))
    pairs = make_pairs(batch.client, batch.item, data.num_items)
    moved = {}
    for dense_lr in (0.0, 1e-4):
        copies = make_copies(user_rows[batch.users], shared, pairs)
        train_copies(model, copies, batch, pairs, protocol="implicit", epochs=1, batches=1, lr=0.05, l2=0.0,
                     draws=Draws(Streams(0), "test", 0), eps=1e-12, dense_lr=dense_lr)
        moved[dense_lr] = ((copies.item - shared["item"][pairs.item]).abs().max(),
                           (copies.dense["w0"] - shared["w0"]).abs().max())
    assert torch.isclose(moved[0.0][0], torch.tensor(0.05), rtol=1e-3)
    assert torch.isclose(moved[1e-4][0], moved[0.0][0])
    assert torch.isclose(moved[0.0][1], torch.tensor(0.05), rtol=1e-3)
    assert torch.isclose(moved[1e-4][1], torch.tensor(1e-4), rtol=1e-3)
