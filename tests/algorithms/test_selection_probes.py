"""Probing in `SimilaritySelection`: stalest candidates first, never-scored ones in random order."""

from __future__ import annotations

import types

import torch

from fedge.algorithms.components.selection import SimilaritySelection, sample_never_scored, stalest_first
from fedge.algorithms.state import FederationState
from fedge.experiment import ExperimentConfig


def _setup(n: int, d: int = 12, seed: int = 0) -> tuple[FederationState, types.SimpleNamespace]:
    g = torch.Generator().manual_seed(seed)
    state = FederationState.create(torch.randn(d, generator=g), n)
    state.bank += 0.1 * torch.randn(n, d, generator=g)
    state.round = 1
    ctx = types.SimpleNamespace(config=ExperimentConfig(), physical=torch.ones(n, n, dtype=torch.bool), k_max=4,
                                generator=torch.Generator().manual_seed(seed), head=(d - 4, d), dim=d)
    return state, ctx


def test_bootstrap_probes_are_spread_over_devices_not_index_ordered() -> None:
    state, ctx = _setup(60)
    SimilaritySelection().select(state, ctx)
    probed = state.scored_round == 1
    assert probed.sum(dim=1).tolist() == [ctx.config.neighbours.bootstrap_probes] * 60
    assert not bool(probed.diagonal().any())
    # With the old 2^30 sentinel every device probed devices 0..9: about 10 distinct targets in all.
    assert int(probed.any(dim=0).sum()) > 50


def test_sample_never_scored_draws_eligible_never_scored_without_replacement() -> None:
    state, _ = _setup(30)
    state.scored_round[:, :10] = 0  # columns 0-9 already scored by everyone
    state.neighbours[:, 10:15] = True  # current neighbours are not probed
    candidates = torch.ones(30, 30, dtype=torch.bool)
    rows = torch.arange(30)
    (pair_rows, pair_cols), missing = sample_never_scored(state, candidates, rows, 5, torch.Generator().manual_seed(1))
    assert len(missing) == 0
    assert bool((pair_cols >= 15).all()) and bool((pair_rows != pair_cols).all())
    pairs = set(zip(pair_rows.tolist(), pair_cols.tolist(), strict=True))
    assert len(pairs) == 30 * 5  # no pair drawn twice


def test_rows_with_few_never_scored_fall_back_to_stalest_first() -> None:
    state, _ = _setup(8)
    state.round = 10
    candidates = torch.ones(8, 8, dtype=torch.bool)
    state.scored_round[0] = torch.tensor([-1, 9, 3, 7, 3, 8, 9, 9], dtype=torch.int32)  # column 0 is itself
    rows = torch.tensor([0])
    (_, _), missing = sample_never_scored(state, candidates, rows, 2, torch.Generator().manual_seed(0))
    assert missing.tolist() == [0]  # only itself is never scored: nothing to draw
    r, c = stalest_first(state, candidates, missing, 3, torch.Generator().manual_seed(0))
    assert r.tolist() == [0, 0, 0]
    assert set(c.tolist()) == {2, 4, 3}  # scored in rounds 3, 3 and 7: the stalest three
