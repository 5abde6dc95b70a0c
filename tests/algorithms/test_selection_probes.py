"""Probing in `SimilaritySelection`: stalest candidates first, never-scored ones in random order, all as messages."""

from __future__ import annotations

import torch

from fedge.algorithms.components.selection import SimilaritySelection, sample_never_scored, stalest_first
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.experiment import NeighbourConfig


def _setup(n: int, d: int = 12, seed: int = 0) -> tuple[DeviceState, RunContext, SimilaritySelection]:
    g = torch.Generator().manual_seed(seed)
    state = DeviceState.create(torch.randn(d, generator=g), n)
    state.bank += 0.1 * torch.randn(n, d, generator=g)
    ctx = RunContext.standalone(n, d, seed=seed, head=(d - 4, d), k_max=torch.full((n,), 4))
    selection = SimilaritySelection(NeighbourConfig())
    selection.start(ctx, state)
    return state, ctx, selection


def test_bootstrap_probes_are_spread_over_devices_and_sent_as_messages() -> None:
    state, ctx, selection = _setup(60)
    everyone = torch.ones(60, dtype=torch.bool)
    selection.select(state, ctx, Round(1, everyone, everyone, everyone))
    probed = selection.scored_round == 1
    assert probed.sum(dim=1).tolist() == [NeighbourConfig().bootstrap_probes] * 60
    assert not bool(probed.diagonal().any())
    # Index-ordered probing (an old bug) reached about 10 distinct targets in all.
    assert int(probed.any(dim=0).sum()) > 50
    ledger = ctx.transport.ledger
    assert ledger.messages_by_link["device-device"] == 2 * 60 * 10  # a request and a sketch per probe
    assert ledger.bytes_by_kind["request"] > 0 and ledger.bytes_by_kind["probe"] > ledger.bytes_by_kind["request"]


def test_sample_never_scored_draws_eligible_never_scored_without_replacement() -> None:
    _, ctx, selection = _setup(30)
    selection.scored_round[:, :10] = 0  # columns 0-9 already scored by everyone
    selection.neighbours[:, 10:15] = True  # current neighbours are not probed
    candidates = torch.ones(30, 30, dtype=torch.bool)
    rows = torch.arange(30)
    (pair_rows, pair_cols), missing = sample_never_scored(selection, ctx, 1, candidates, rows, 5)
    assert len(missing) == 0
    assert bool((pair_cols >= 15).all()) and bool((pair_rows != pair_cols).all())
    pairs = set(zip(pair_rows.tolist(), pair_cols.tolist(), strict=True))
    assert len(pairs) == 30 * 5  # no pair drawn twice


def test_rows_with_few_never_scored_fall_back_to_stalest_first() -> None:
    _, ctx, selection = _setup(8)
    candidates = torch.ones(8, 8, dtype=torch.bool)
    selection.scored_round[0] = torch.tensor([-1, 9, 3, 7, 3, 8, 9, 9], dtype=torch.int32)  # column 0 is itself
    rows = torch.tensor([0])
    (_, _), missing = sample_never_scored(selection, ctx, 10, candidates, rows, 2)
    assert missing.tolist() == [0]  # only itself is never scored: nothing to draw
    r, c = stalest_first(selection, ctx, 10, candidates, missing, 3)
    assert r.tolist() == [0, 0, 0]
    assert set(c.tolist()) == {2, 4, 3}  # scored in rounds 3, 3 and 7: the stalest three
