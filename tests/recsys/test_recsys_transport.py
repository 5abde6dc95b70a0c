"""Recommendation traffic crosses the message layer: the loopback transport (bytes only) trains exactly like the
direct one, the ledger counts exactly the bytes that crossed, and every body's size is its encoded length."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from fedge.core.codec import unframe
from fedge.messaging import Link, Role, link_of
from fedge.output import read_jsonl
from fedge.recsys import wire
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.bodies import ItemRequests, RowsBody
from fedge.recsys.runner import prepare, run
from fedge.recsys.wire import ClientRows

WALL_CLOCK = {"round_s", "mean_round_s"}


def _metrics_lines(path) -> list[str]:
    """metrics.jsonl without its wall-clock keys, one JSON text per round."""
    return [json.dumps({k: v for k, v in r.items() if k not in WALL_CLOCK}) for r in read_jsonl(path)]


@pytest.mark.parametrize(("algorithm", "options"), [
    ("fedmf", {}),
    ("fedncf", {}),
    ("dfedmf", {}),
    ("fedmf", {"train__upload": "full"}),
    ("fedmf", {"train__value_dtype": "fp16", "train__eval_user_epochs": 1}),
    ("fedmeta", {}),
    ("dfedncf", {"decentralized__selection": "random", "train__upload": "full"}),
], ids=["fedmf", "fedncf", "dfedmf", "fedmf-full", "fedmf-fp16", "fedmeta", "dfedncf-random-full"])
def test_loopback_and_direct_runs_are_identical(tiny, tiny_config, tmp_path, monkeypatch, algorithm: str,
                                                 options: dict) -> None:
    monkeypatch.setattr(wire, "CHUNK_FLOATS", 700)  # uploads and full downloads cross a few clients at a time
    outs = {}
    for transport in ("direct", "loopback"):
        cfg = tiny_config(tmp_path / transport, algorithm=algorithm, runtime={"transport": transport},
                          train__rounds=3, **options)
        outs[transport] = (run(cfg, tiny), cfg.out_dir)
    (direct, d_out), (loop, l_out) = outs["direct"], outs["loopback"]
    assert direct.summary["transport"] == "direct" and loop.summary["transport"] == "loopback"
    assert _metrics_lines(d_out / "metrics.jsonl") == _metrics_lines(l_out / "metrics.jsonl")
    assert direct.summary["mb_up"] > 0 and direct.summary["bytes_by_link"] == loop.summary["bytes_by_link"]
    assert direct.summary["messages_by_link"] == loop.summary["messages_by_link"]
    assert (d_out / "topk.json").read_bytes() == (l_out / "topk.json").read_bytes()
    for name in direct.state.shared:
        assert torch.equal(direct.state.shared[name], loop.state.shared[name])
    if direct.state.user is not None:
        assert torch.equal(direct.state.user, loop.state.user)


@pytest.mark.parametrize(("algorithm", "options"), [
    ("fedmf", {}), ("fedmf", {"train__upload": "full"}), ("dfedmf", {}), ("fedmeta", {})])
def test_ledger_counts_exactly_the_bytes_that_crossed(tiny, tiny_config, tmp_path, recorder, algorithm: str,
                                                      options: dict) -> None:
    cfg = tiny_config(tmp_path, algorithm=algorithm, **options)
    summary = run(cfg, tiny, transport=recorder).summary
    crossed: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for message in recorder.transport.messages:
        header, _ = unframe(message)
        link = link_of(Role(header.sender_role), Role(header.receiver_role)).value
        crossed[link] += len(message)
        count[link] += 1
    assert {k: v for k, v in summary["bytes_by_link"].items() if v} == dict(crossed)
    assert {k: v for k, v in summary["messages_by_link"].items() if v} == dict(count)
    assert summary["mb_total"] * 1e6 == pytest.approx(sum(crossed.values()), abs=0.5)
    edge = algorithm.startswith("dfed")
    assert set(crossed) == ({Link.DEVICE_EDGE.value, Link.EDGE_EDGE.value} if edge else {Link.DEVICE_SERVER.value})


def _rows(mode: str) -> ClientRows:
    dense = {"w": torch.randn(3, 2, 2), "b": torch.randn(3, 1)}
    rows = torch.randn(5, 4)
    rows[1, 2] = 0.0  # a kept zero stays a kept coordinate
    return ClientRows(3, 9, torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 8, 0, 3, 4]), rows, dense, mode)


@pytest.mark.parametrize("mode", ["interacted", "full"])
@pytest.mark.parametrize("value_dtype", ["fp32", "fp16"])
def test_rows_body_sizes_encode_and_decode(mode: str, value_dtype: str) -> None:
    body = RowsBody(_rows(mode), value_dtype)
    blobs = [body.encode(p) for p in range(len(body))]
    assert body.sizes().tolist() == [len(b) for b in blobs]
    decoded, received = body.decode(blobs).rows, body.received().rows
    if mode == "full":  # every item becomes a pair row; untouched ones carry zero deltas
        assert decoded.pair_item.tolist() == list(range(9)) * 3
        assert torch.equal(decoded.item_rows.reshape(3, 9, 4)[received.pair_client, received.pair_item],
                           received.item_rows)
        assert float(decoded.item_rows.abs().sum()) == pytest.approx(float(received.item_rows.abs().sum()))
    else:
        for field in ("pair_client", "pair_item", "item_rows"):
            assert torch.equal(getattr(decoded, field), getattr(received, field))
    for name in received.dense:
        assert torch.equal(decoded.dense[name], received.dense[name])
    averages = [wire.aggregate(r) for r in (decoded, received)]
    assert torch.equal(averages[0].item_mean, averages[1].item_mean)
    assert torch.equal(averages[0].item_count, averages[1].item_count)


@pytest.mark.parametrize("num_items", [40, 70000])
def test_item_requests_round_trip(num_items: int) -> None:
    body = ItemRequests(num_items, torch.tensor([0, 3, 3, 5]), torch.tensor([1, 7, 39, 0, num_items - 1]))
    blobs = [body.encode(p) for p in range(len(body))]
    assert body.sizes().tolist() == [len(b) for b in blobs] == [4 + 3 * (2 if num_items <= 65536 else 4), 4,
                                                                4 + 2 * (2 if num_items <= 65536 else 4)]
    back = body.decode(blobs)
    assert torch.equal(back.ptr, body.ptr) and torch.equal(back.items, body.items)
    with pytest.raises(ValueError, match="does not hold"):
        body.decode([blobs[0][:-1]])
    with pytest.raises(ValueError, match="shorter than its count"):
        body.decode([b"\x01"])


def test_edges_are_balanced_and_users_keep_their_edge(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path, algorithm="dfedmf")
    _, data = prepare(cfg, tiny)
    first = ALGORITHMS.create("dfedmf", Context(cfg, data)).edge_of_user
    again = ALGORITHMS.create("dfedmf", Context(cfg, data)).edge_of_user
    assert torch.equal(first, again) and torch.bincount(first).tolist() == [4, 4, 4]
