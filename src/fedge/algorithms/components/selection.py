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
from fedge.core.neighbours import best_per_row, random_select, threshold_select, topk_select
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
            updates = state.updates(start, stop).half().float()  # as carried by the fp16 sketch
            values = pair_cosine(updates, state.masks[:, start:stop], rows, cols)
        else:
            values = -pair_squared_distance(state.bank[:, start:stop], None, rows, cols)
        state.scores[rows, cols] = values
        state.scored_round[rows, cols] = state.round

    def _probe(self, state: FederationState, ctx: RunContext, candidates: torch.Tensor) -> int:
        """Probe, per device, the `budget` stalest eligible candidates (never scored first), ties in random order."""
        cfg = ctx.config.neighbours
        first = int(state.scored_round.max()) < 0
        budget = cfg.bootstrap_probes if first else cfg.probes_per_round
        if budget == 0:
            return 0
        rows = torch.nonzero(candidates.any(dim=1)).flatten()
        chosen, missing = sample_never_scored(state, candidates, rows, budget, ctx.generator)
        picks = [chosen]
        if len(missing):  # rows with too few never-scored candidates: rank all of theirs exactly
            picks.append(stalest_first(state, candidates, missing, budget, ctx.generator))
        probe_rows, probe_cols = (torch.cat(t) for t in zip(*picks, strict=True))
        self.score_pairs(state, ctx, probe_rows, probe_cols)
        return self._sketch_bytes(state, ctx, probe_cols)

    def _sketch_bytes(self, state: FederationState, ctx: RunContext, senders: torch.Tensor) -> int:
        start, stop = self._scope(ctx)
        nnz = state.masks[senders, start:stop].sum(dim=1)
        return int(encoded_sizes(nnz, stop - start, "fp16").sum())

    def select(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]:
        cfg = ctx.config.neighbours
        alive = state.alive
        candidates = ctx.physical if bool(alive.all()) else ctx.physical & alive[:, None] & alive[None, :]
        scoring_bytes = self._probe(state, ctx, candidates)
        known = candidates & (state.scored_round >= 0)
        if self.metric == "cosine":
            chosen = threshold_select(state.scores, known, cfg.delta, cfg.k_min, ctx.k_max)
        else:
            chosen = topk_select(state.scores, known, ctx.k_max)
        return chosen, scoring_bytes

    def observe(self, state: FederationState, ctx: RunContext, adjacency: torch.Tensor) -> None:
        """Refresh scores of the pairs whose payloads were just received."""
        rows, cols = torch.nonzero(adjacency, as_tuple=True)
        self.score_pairs(state, ctx, rows, cols)


def _probe_eligible(state: FederationState, candidates: torch.Tensor, rows: torch.Tensor,
                    cols: torch.Tensor) -> torch.Tensor:
    """Whether (rows[p], cols[p]) may be probed: a live candidate, not a current neighbour, not itself."""
    return candidates[rows, cols] & ~state.neighbours[rows, cols] & (rows != cols)


def sample_never_scored(state: FederationState, candidates: torch.Tensor, rows: torch.Tensor, budget: int,
                        generator: torch.Generator, attempts_per_probe: int = 4) -> tuple[tuple[torch.Tensor, ...],
                                                                                          torch.Tensor]:
    """`budget` never-scored eligible candidates per row, drawn uniformly without replacement by rejection.

    Never-scored candidates are the stalest, so when a row has at least `budget` of them the exact rule ("stalest
    first, random tie-break") is a uniform draw among them — found here with a few random column draws per row
    instead of ranking a dense [N, N] priority (at 10,000 devices almost every candidate is never scored).
    Returns the pairs drawn and the rows that did not get `budget` of them (few left, or unlucky) for the exact
    ranking.
    """
    n = candidates.shape[1]
    got = torch.full((len(rows), budget), -1, dtype=torch.long)
    filled = torch.zeros(len(rows), dtype=torch.long)
    pending = torch.arange(len(rows))
    for _ in range(attempts_per_probe * budget + 4):
        if len(pending) == 0:
            break
        draw = torch.randint(0, n, (len(pending),), generator=generator)
        r = rows[pending]
        ok = _probe_eligible(state, candidates, r, draw) & (state.scored_round[r, draw] < 0)
        ok &= ~(got[pending] == draw[:, None]).any(dim=1)  # without replacement
        hit = pending[ok]
        got[hit, filled[hit]] = draw[ok]
        filled[hit] += 1
        pending = pending[filled[pending] < budget]
    done = filled >= budget
    pair_rows = rows[done].repeat_interleave(budget)
    return (pair_rows, got[done].flatten()), rows[~done]


def stalest_first(state: FederationState, candidates: torch.Tensor, rows: torch.Tensor, budget: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact rule on the given rows: the `budget` eligible candidates scored longest ago (never = stalest), ties
    broken by uniform noise; ages are small integers, so float32 keeps the noise."""
    n = candidates.shape[1]
    scored = state.scored_round[rows]
    age = torch.where(scored < 0, state.round + 1, state.round - scored)  # never scored: staler than anything
    priority = torch.rand(len(rows), n, generator=generator) + age
    local = torch.arange(len(rows))
    eligible = candidates[rows] & ~state.neighbours[rows]
    eligible[local, rows] = False
    picked = best_per_row(priority.masked_fill_(~eligible, float("-inf")),
                          torch.full((len(rows),), budget, dtype=torch.long))
    r, c = torch.nonzero(picked, as_tuple=True)
    return rows[r], c


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
