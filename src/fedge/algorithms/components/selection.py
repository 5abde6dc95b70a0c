"""Neighbour selection components (DPMN step 3 and the baselines' choices).

`SimilaritySelection` keeps, per device, a table of scores of other devices that it has actually observed: scores
come only from payloads it received (neighbours, refreshed every exchange) and from probes. A probe is a small
similarity sketch that a candidate sends on request: its update restricted to the classifier head (or the whole
model with `score_on: all`), masked, with fp16 values (a similarity needs no more precision), in the payload codec;
its bytes are counted. In the first round each device
probes up to `bootstrap_probes` candidates; afterwards it probes the `probes_per_round` candidates whose scores are
stalest (exploration), so scores of devices that changed are refreshed.

What is compared: updates since the common initialisation, x̃_i − x0 ∘ m_i, on the overlap m_ij. Raw weights are
dominated by the shared initialisation and are nearly parallel for every pair (cosine ≈ 1); updates carry what each
device learned. docs/dpmn.md has the measurement behind `score_on: head`.
"""

from __future__ import annotations

import torch

from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core.codec import encoded_sizes
from fedge.core.neighbours import random_select, threshold_select, topk_select
from fedge.core.similarity import pair_cosine, pair_squared_distance


class FixedTopology:
    """Neighbours are the live devices adjacent in the fixed logical topology (dfl, dpmp)."""

    def select(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]:
        alive = state.alive
        return ctx.topology & alive[:, None] & alive[None, :], 0


class SimilaritySelection:
    """Score-based selection: cosine ≥ δ within [k_min, k_max] (dpmn) or the k nearest by distance (dpcg)."""

    def __init__(self, metric: str = "cosine") -> None:
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"unknown similarity metric {metric!r}")
        self.metric = metric

    def _scope(self, ctx: RunContext) -> tuple[int, int]:
        return ctx.head if ctx.config.neighbours.score_on == "head" else (0, ctx.dim)

    def score_pairs(self, state: FederationState, ctx: RunContext, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Score the listed (i, j) pairs from j's current update and store them as fresh."""
        if len(rows) == 0:
            return
        start, stop = self._scope(ctx)
        if self.metric == "cosine":
            updates = state.updates()[:, start:stop].half().float()  # as carried by the fp16 sketch
            values = pair_cosine(updates, state.masks[:, start:stop], rows, cols)
        else:
            values = -pair_squared_distance(state.bank[:, start:stop], None, rows, cols)
        state.scores[rows, cols] = values
        state.score_age[rows, cols] = 0

    def _probe(self, state: FederationState, ctx: RunContext, candidates: torch.Tensor) -> int:
        cfg = ctx.config.neighbours
        first = bool((state.score_age < 0).all())
        budget = cfg.bootstrap_probes if first else cfg.probes_per_round
        if budget == 0:
            return 0
        age = torch.where(state.score_age < 0, torch.full_like(state.score_age, 1 << 30), state.score_age)
        eligible = candidates & ~state.neighbours
        # Stalest first; random tie-break so unseen candidates are explored in random order.
        noise = torch.rand(state.score_age.shape, generator=ctx.generator)
        priority = torch.where(eligible, age.to(torch.float32) + noise, torch.full_like(noise, float("-inf")))
        probes = topk_select(priority, eligible, budget)
        rows, cols = torch.nonzero(probes, as_tuple=True)
        self.score_pairs(state, ctx, rows, cols)
        return self._sketch_bytes(state, ctx, cols)

    def _sketch_bytes(self, state: FederationState, ctx: RunContext, senders: torch.Tensor) -> int:
        start, stop = self._scope(ctx)
        nnz = state.masks[senders, start:stop].sum(dim=1)
        return int(encoded_sizes(nnz, stop - start, "fp16").sum())

    def select(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]:
        cfg = ctx.config.neighbours
        alive = state.alive
        candidates = ctx.physical & alive[:, None] & alive[None, :]
        state.score_age = torch.where(state.score_age >= 0, state.score_age + 1, state.score_age)
        scoring_bytes = self._probe(state, ctx, candidates)
        known = candidates & (state.score_age >= 0)
        if self.metric == "cosine":
            chosen = threshold_select(state.scores, known, cfg.delta, cfg.k_min, ctx.k_max)
        else:
            chosen = topk_select(state.scores, known, ctx.k_max)
        return chosen, scoring_bytes

    def observe(self, state: FederationState, ctx: RunContext, adjacency: torch.Tensor) -> None:
        """Refresh scores of the pairs whose payloads were just received."""
        rows, cols = torch.nonzero(adjacency, as_tuple=True)
        self.score_pairs(state, ctx, rows, cols)


class RandomLikeSelection:
    """dpmn-r: as many neighbours as DPMN's rule would pick, but drawn uniformly from the live candidates."""

    def __init__(self) -> None:
        self.inner = SimilaritySelection("cosine")

    def select(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]:
        chosen, scoring_bytes = self.inner.select(state, ctx)
        alive = state.alive
        candidates = ctx.physical & alive[:, None] & alive[None, :]
        return random_select(candidates, chosen.sum(dim=1), ctx.generator), scoring_bytes

    def observe(self, state: FederationState, ctx: RunContext, adjacency: torch.Tensor) -> None:
        self.inner.observe(state, ctx, adjacency)
