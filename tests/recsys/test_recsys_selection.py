"""Issue 17, acceptance 1: every choice a recsys run makes is made on validation, and test is only measured.

The run picks the round it reports (and, with `train.patience`, when to stop) from `val_hr@10` / `val_rmse`; the
evaluation-time refit and the centralized references' epochs go through the same selection. Replacing every test item
(and its negatives) must leave every choice — the chosen round, the number of rounds run, the trained parameters, the
exported model, every validation number — bit for bit unchanged, and change only the test numbers.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from fedge.recsys import runner
from fedge.recsys.algorithms.base import RecState
from fedge.recsys.protocol import HeldOut, RecData
from fedge.recsys.selection import Selection


def _replace_test(data: RecData) -> RecData:
    """The same split with every test item and negative replaced by other items (a fixed, unrelated generator)."""
    gen = torch.Generator().manual_seed(12345)
    held = data.test
    if held.items is not None:
        return replace(data, test=HeldOut(items=torch.randint(0, data.num_items, held.items.shape, generator=gen)))
    assert held.user is not None and held.item is not None and held.rating is not None
    return replace(data, test=HeldOut(user=held.user, item=torch.randint(0, data.num_items, held.item.shape,
                                                                          generator=gen),
                                      rating=held.rating[torch.randperm(len(held.rating), generator=gen)]))


@pytest.mark.parametrize("algorithm,opts", [
    ("fedmf", {}),
    ("fedncf", {"train__eval_user_epochs": 2, "train__user_epochs": 1}),  # with the evaluation-time refit
    ("central-mf", {"train__lr": 0.05}),  # the reference's epochs
    ("central-neumf", {"data__protocol": "explicit", "train__lr": 0.05}),
])
def test_replacing_the_test_items_changes_no_choice(small, tiny_config, tmp_path, monkeypatch, algorithm,
                                                    opts) -> None:
    ratings = small
    cfg = {"algorithm": algorithm, "train__rounds": 12, "train__patience": 3, **opts}
    honest = runner.run(tiny_config(tmp_path / "a", **cfg), ratings)
    prepare = runner.prepare
    monkeypatch.setattr(runner, "prepare", lambda c, r=None: (lambda rd: (rd[0], _replace_test(rd[1])))(prepare(c, r)))
    other = runner.run(tiny_config(tmp_path / "b", **cfg), ratings)
    a, b = honest.summary, other.summary
    for key in ("best_round", "rounds_done", "stopped"):
        assert a[key] == b[key]
    val = [k for k in a if k.startswith("val_")]
    test = [k for k in a if k.startswith("test_")]
    assert val and test and all(a[k] == b[k] for k in val)
    for x, y in zip(honest.history, other.history, strict=True):  # every round: same losses, same validation
        assert {k: v for k, v in x.items() if not k.startswith(("test_", "round_s"))} == \
               {k: v for k, v in y.items() if not k.startswith(("test_", "round_s"))}
    assert any(x[k] != y[k] for x, y in zip(honest.history, other.history, strict=True) for k in x
               if k.startswith("test_"))  # the test set did change what was measured on it
    assert all(torch.equal(honest.state.shared[k], other.state.shared[k]) for k in honest.state.shared)
    assert honest.state.user is None or torch.equal(honest.state.user, other.state.user)
    emb = [torch.load(tmp_path / p / "run/item_embeddings.pt")["item_embeddings"] for p in "ab"]
    assert torch.equal(emb[0], emb[1])
    topk = [json.loads((tmp_path / p / "run/topk.json").read_text()) for p in "ab"]
    assert topk[0] == topk[1]


def test_the_summary_reports_the_best_validation_round_and_stops_after_patience(small, tiny_config,
                                                                                tmp_path) -> None:
    result = runner.run(tiny_config(tmp_path, algorithm="central-mf", train__rounds=40, train__patience=2,
                                    train__lr=0.3), small)
    history, summary = result.history, result.summary
    val = [r["val_hr@10"] for r in history]
    best = val.index(max(val))  # the earliest of the best
    assert summary["best_round"] == best + 1 and summary["val_hr@10"] == max(val)
    assert summary["test_hr@10"] == history[best]["test_hr@10"]
    assert summary["rounds_done"] == len(history) == best + 1 + 2 < 40  # stopped two rounds after the best
    assert summary["stopped"].startswith("early stopping: no better val_hr@10 in the 2 rounds after round")


def test_selection_compares_in_the_protocol_direction_and_keeps_the_earliest_tie() -> None:
    state = RecState({"item": torch.zeros(2)}, torch.ones(3))
    ranking = Selection("implicit", patience=2)
    for rnd, hr in enumerate([0.1, 0.3, 0.3, 0.2], start=1):
        ranking.offer(rnd, {"val_hr@10": hr, "test_hr@10": 1.0 - hr, "loss": 9.0}, state)
    assert ranking.best_round == 2 and ranking.best_metrics == {"val_hr@10": 0.3, "test_hr@10": 0.7}
    assert not ranking.exhausted(3) and ranking.exhausted(4)
    state.user += 1  # the kept state is a copy, not the training state that goes on changing
    assert ranking.best_state is not None and torch.equal(ranking.best_state.user, torch.ones(3))
    rmse = Selection("explicit")
    for rnd, value in enumerate([1.2, 0.9, 1.0], start=1):
        rmse.offer(rnd, {"val_rmse": value})
    assert rmse.best_round == 2 and not rmse.exhausted(100)  # patience 0: never stops
    history = [{"round": r, "val_hr@10": v} for r, v in [(1, 0.1), (2, 0.3), (3, 0.2)]]
    replayed = Selection.replay("implicit", 2, history)
    assert replayed.best_round == 2 and replayed.best_state is None
