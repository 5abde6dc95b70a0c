"""No user's interactions or user factors appear in what crossed the transport: the bytes of every message of a
round, recorded by a loopback transport, are inspected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.codec import COUNT, decode
from fedge.messaging import Kind, Ledger, Role
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.runner import prepare


def _contains_vector(payload: bytes, vector: torch.Tensor) -> bool:
    return vector.detach().to(torch.float32).numpy().tobytes() in payload


def _one_round(cfg, tiny, recorder):
    _, data = prepare(cfg, tiny)
    transport = recorder(Ledger(data.num_users))
    algo = ALGORITHMS.create(cfg.algorithm, Context(cfg, data, transport=transport))
    state = algo.init_state(torch.Generator().manual_seed(0))
    before = None if state.user is None else state.user.clone()
    algo.server_aggregate(state, algo.client_round(state, torch.arange(data.num_users), 1), 1)
    return data, state, before, transport.frames()


@pytest.mark.parametrize("algorithm", ["fedmf", "fedncf", "fedmeta", "dfedmf"])
@pytest.mark.parametrize("protocol", ["implicit", "explicit"])
def test_what_crossed_carries_only_the_shared_model(tiny, tiny_config, tmp_path, recorder, algorithm: str,
                                                    protocol: str) -> None:
    cfg = tiny_config(tmp_path, algorithm=algorithm, data__protocol=protocol)
    data, state, user_before, frames = _one_round(cfg, tiny, recorder)
    aggregator = Role.EDGE if algorithm.startswith("dfed") else Role.SERVER
    uploads = {f.sender: body for f, body in frames
               if f.kind == Kind.MODEL and f.sender_role == Role.DEVICE and f.receiver_role == aggregator}
    assert sorted(uploads) == list(range(data.num_users))  # one upload per user, named by its frame
    per_edge = algorithm.startswith("dfed")
    shared_size = sum((v[0] if per_edge else v).numel() for v in state.shared.values())
    for b, payload in uploads.items():
        decoded = decode(payload)
        # The upload is a vector over the shared model only: there is no slot for a user row or a rating.
        assert decoded.values.numel() == shared_size
        if state.user is not None:
            assert not torch.equal(state.user[b], user_before[b])  # the private row did train...
            assert not _contains_vector(payload, state.user[b])  # ...and neither its new value...
            assert not _contains_vector(payload, user_before[b])  # ...nor its old value was sent
        start, stop = int(data.user_ptr[b]), int(data.user_ptr[b + 1])
        own_items = data.train_item[start:stop]
        # No list of the user's item ids is written into the upload (only coordinates of the shared vector).
        assert len(own_items) >= 3
        for ids in (own_items.to(torch.int32), own_items.to(torch.int64), own_items.to(torch.int16)):
            assert ids.numpy().tobytes() not in payload
        if protocol == "explicit":
            assert not _contains_vector(payload, data.train_target[start:stop])  # the ratings themselves
        width = state.shared["item"].shape[-1]
        rows = decoded.mask[: data.num_items * width].reshape(data.num_items, width).any(dim=1)
        if protocol == "implicit":
            # Touched rows mix positives with sampled negatives: the positives are a strict subset.
            assert bool(rows[own_items].all()) and int(rows.sum()) > len(own_items)
    # No message of any kind, in any direction, holds a user row, old or new.
    if state.user is not None:
        for _, body in frames:
            for b in range(data.num_users):
                assert not _contains_vector(body, state.user[b]) and not _contains_vector(body, user_before[b])
    # What the interacted mode does reveal: each request names the items its user will touch, positives mixed
    # with at least as many fresh negatives in implicit feedback.
    requests = {f.sender: body for f, body in frames if f.kind == Kind.REQUEST and f.sender_role == Role.DEVICE}
    assert sorted(requests) == list(range(data.num_users))
    for b, body in requests.items():
        named = set(np.frombuffer(body, dtype="<u2", offset=COUNT.size).tolist())
        own = set(data.train_item[int(data.user_ptr[b]): int(data.user_ptr[b + 1])].tolist())
        assert own <= named and (len(named) > len(own)) == (protocol == "implicit")


@pytest.mark.parametrize("algorithm", ["fedmf", "fedmeta", "dfedmf"])
def test_full_catalogue_messages_hide_which_items(tiny, tiny_config, tmp_path, recorder, algorithm: str) -> None:
    cfg = tiny_config(tmp_path, algorithm=algorithm, train__upload="full")
    data, _, _, frames = _one_round(cfg, tiny, recorder)
    assert not [f for f, _ in frames if f.kind == Kind.REQUEST and f.sender_role == Role.DEVICE]  # nothing asked
    uploads = [body for f, body in frames if f.kind == Kind.MODEL and f.sender_role == Role.DEVICE]
    downloads = [body for f, body in frames if f.kind == Kind.DOWNLOAD]
    assert len(uploads) == len(downloads) == data.num_users
    assert len({len(p) for p in uploads}) == 1  # every client's upload has the same length...
    assert len({p[:10] for p in uploads}) == 1  # ...and header: same layout, same d, same nnz
    for payload in uploads:
        assert bool(decode(payload).mask.all())
    assert len({len(p) for p in downloads}) == 1  # everyone downloads the whole model
