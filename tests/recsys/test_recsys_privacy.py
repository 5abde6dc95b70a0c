"""No user's interactions or user factors appear in any payload that leaves a client (encoded bytes inspected)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.codec import decode
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.runner import prepare


def _contains_vector(payload: bytes, vector: torch.Tensor) -> bool:
    return vector.detach().to(torch.float32).numpy().tobytes() in payload


@pytest.mark.parametrize("algorithm", ["fedmf", "fedncf", "fedmeta"])
@pytest.mark.parametrize("protocol", ["implicit", "explicit"])
def test_payloads_carry_only_the_shared_model(tiny, tiny_config, tmp_path, algorithm: str, protocol: str) -> None:
    cfg = tiny_config(tmp_path, algorithm=algorithm, data__protocol=protocol)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS[algorithm](Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    users = torch.arange(data.num_users)
    user_before = None if state.user is None else state.user.clone()
    uploads = algo.client_round(state, users, torch.Generator().manual_seed(1))
    payloads = uploads.payloads()
    shared_size = sum(v.numel() for v in state.shared.values())
    assert len(payloads) == data.num_users
    for b, payload in enumerate(payloads):
        decoded = decode(payload)
        # The payload is a vector over the shared model only: there is no slot for a user row or a rating.
        assert decoded.values.numel() == shared_size
        if state.user is not None:
            assert not torch.equal(state.user[b], user_before[b])  # the private row did train...
            assert not _contains_vector(payload, state.user[b])  # ...and neither its new value...
            assert not _contains_vector(payload, user_before[b])  # ...nor its old value was sent
        start, stop = int(data.user_ptr[b]), int(data.user_ptr[b + 1])
        own_items = data.train_item[start:stop]
        # No list of the user's item ids is written into the payload (only coordinates of the shared vector).
        assert len(own_items) >= 3
        for ids in (own_items.to(torch.int32), own_items.to(torch.int64), own_items.to(torch.int16)):
            assert ids.numpy().tobytes() not in payload
        if protocol == "explicit":
            assert not _contains_vector(payload, data.train_target[start:stop])  # the ratings themselves
        width = uploads.item_dim
        rows = decoded.mask[: data.num_items * width].reshape(data.num_items, width).any(dim=1)
        if protocol == "implicit":
            # Touched rows mix positives with sampled negatives: the positives are a strict subset.
            assert bool(rows[own_items].all()) and int(rows.sum()) > len(own_items)


def test_full_catalogue_payloads_hide_which_items(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path, train__upload="full")
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS["fedmf"](Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    payloads = algo.client_round(state, torch.arange(data.num_users), torch.Generator().manual_seed(1)).payloads()
    assert len({len(p) for p in payloads}) == 1
    assert len({p[:10] for p in payloads}) == 1  # identical headers: same layout, same d, same nnz
    for payload in payloads:
        assert bool(decode(payload).mask.all())


def test_wire_path_trains_like_count_path(tiny, tiny_config, tmp_path) -> None:
    results = []
    for payloads in ("encode", "count"):
        cfg = tiny_config(tmp_path, train__payloads=payloads)
        _, data = prepare(cfg, tiny)
        algo = ALGORITHMS["fedmf"](Context(cfg, data))
        state = algo.init_state(torch.Generator().manual_seed(0))
        gen = torch.Generator().manual_seed(1)
        report = algo.server_aggregate(state, algo.client_round(state, torch.arange(data.num_users), gen))
        results.append((state.shared["item"].clone(), report.bytes_up))
    assert np.allclose(results[0][0].numpy(), results[1][0].numpy(), atol=1e-6)
    assert results[0][1] == results[1][1]
