"""Neighbour selection components (DPMN step 3 and the baselines' choices).

`SimilaritySelection` keeps, per device, a table of scores of other devices computed only from messages it
received: the models of its neighbours (refreshed at every exchange) and probes. A probe is a request ("send me a
sketch") answered by the candidate with its similarity sketch: its update restricted to the classifier head (or the
whole model with `score_on: all`), masked, with fp16 values (a similarity needs no more precision), in the payload
codec. Requests and sketches are messages on the transport, so their bytes are counted. In the first round each
device probes up to `bootstrap_probes` candidates; afterwards the `probes_per_round` candidates whose scores are
stalest (exploration), so scores of devices that changed are refreshed. Random choices come from each device's own
streams ("probe", "probe-order", "random-neighbours") and ties go to the lower device id, so the choice does not
depend on how devices are stored.

What is compared: updates since the common initialisation, x̃_i − x0 ∘ m_i, on the overlap m_ij (cosine, dpmn), or
the models themselves (Euclidean distance, dpcg). Raw weights are dominated by the shared initialisation and are
nearly parallel for every pair (cosine ≈ 1); updates carry what each device learned. docs/dpmn.md has the
measurement behind `score_on: head`.
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.algorithms.base import Selector
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core.neighbours import best_per_row, random_select, threshold_select, topk_select
from fedge.core.similarity import paired_cosine, paired_squared_distance
from fedge.experiment import NeighbourConfig
from fedge.messaging import Inbox, Kind, Models, Requests, Role, route


def reachable(ctx: RunContext, rnd: Round) -> torch.Tensor:
    """[N, N] candidates: pairs the physical topology connects, both taking part this round."""
    taking_part = rnd.participants
    if bool(taking_part.all()):
        return ctx.physical
    return ctx.physical & taking_part[:, None] & taking_part[None, :]


class FixedTopology(Selector):
    """Neighbours are the participants adjacent in the fixed logical topology (dfl, dpmp); senders push."""

    pulls = False

    def select(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        taking_part = rnd.participants
        return ctx.topology & taking_part[:, None] & taking_part[None, :]


class SimilaritySelection(Selector):
    """Score-based selection: cosine ≥ δ within [k_min, k_max] (dpmn) or the k nearest by distance (dpcg)."""

    probes = True

    def __init__(self, cfg: NeighbourConfig, metric: str = "cosine") -> None:
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"unknown similarity metric {metric!r}")
        self.cfg, self.metric = cfg, metric
        self.scores = torch.zeros(0, 0)  # [N, N]: latest score i has of j
        self.scored_round = torch.zeros(0, 0, dtype=torch.int32)  # [N, N]: round i last scored j; -1 = never
        self.neighbours = torch.zeros(0, 0, dtype=torch.bool)  # [N, N]: S_i chosen in the last round

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        n = ctx.num_devices
        self.scores = torch.zeros(n, n)
        self.scored_round = torch.full((n, n), -1, dtype=torch.int32)
        self.neighbours = torch.zeros(n, n, dtype=torch.bool)

    def _scope(self, ctx: RunContext) -> tuple[int, int]:
        return ctx.head if self.cfg.score_on == "head" else (0, ctx.dim)

    def _own(self, devices: DeviceState, ctx: RunContext, rows: torch.Tensor, fp16: bool) -> torch.Tensor:
        """The receivers' own side of a score: their update (cosine) or model (euclidean) on the scope."""
        start, stop = self._scope(ctx)
        own = devices.updates(start, stop)[rows] if self.metric == "cosine" else devices.bank[rows, start:stop]
        return own.half().float() if fp16 or self.metric == "cosine" else own

    def _store(self, devices: DeviceState, ctx: RunContext, rnd: Round, receivers: torch.Tensor,
               senders: torch.Tensor, values: torch.Tensor, masks: torch.Tensor, fp16: bool) -> None:
        """Score each receiver against the sender's received vector and keep it as fresh."""
        if len(receivers) == 0:
            return
        start, stop = self._scope(ctx)
        own, own_masks = self._own(devices, ctx, receivers, fp16), devices.masks[receivers, start:stop]
        if self.metric == "cosine":
            score = paired_cosine(own, own_masks, values, masks)
        else:
            score = -paired_squared_distance(own, own_masks, values, masks)
        self.scores[receivers, senders] = score
        self.scored_round[receivers, senders] = rnd.number

    def _probe(self, devices: DeviceState, ctx: RunContext, rnd: Round, candidates: torch.Tensor) -> None:
        """Probe, per device, the `budget` stalest eligible candidates (never scored first), ties in random order."""
        first = int(self.scored_round.max()) < 0
        budget = self.cfg.bootstrap_probes if first else self.cfg.probes_per_round
        if budget == 0:
            return
        rows = torch.nonzero(candidates.any(dim=1)).flatten()
        chosen, missing = sample_never_scored(self, ctx, rnd.number, candidates, rows, budget)
        picks = [chosen]
        if len(missing):  # rows with too few never-scored candidates: rank all of theirs exactly
            picks.append(stalest_first(self, ctx, rnd.number, candidates, missing, budget))
        askers, asked = (torch.cat(t) for t in zip(*picks, strict=True))
        if len(askers) == 0:
            return
        requests = ctx.transport.send(route(Kind.REQUEST, rnd.number, Role.DEVICE, Role.DEVICE, askers, asked),
                                      Requests(len(askers)))
        # Each asked device answers every request it received with its sketch.
        answering, asking = requests.route.receivers, requests.route.senders
        senders, slot = torch.unique(answering, return_inverse=True)
        start, stop = self._scope(ctx)
        masks = devices.masks[senders, start:stop]
        sketch = devices.updates(start, stop)[senders] if self.metric == "cosine" else \
            devices.bank[senders, start:stop]
        if ctx.release is not None:  # the peer mechanism: the sketch is a noisy release too
            base = torch.zeros_like(sketch) if self.metric == "cosine" else devices.initial[None, start:stop] * masks
            sketch = ctx.release.release("sketch", rnd.number, ctx.ids[senders], base, sketch, masks)
        body = Models(sketch, slot, masks, "fp16")
        replies = ctx.transport.send(route(Kind.PROBE, rnd.number, Role.DEVICE, Role.DEVICE, answering, asking), body)
        received = replies.body
        assert isinstance(received, Models)
        self._store(devices, ctx, rnd, replies.route.receivers, replies.route.senders, received.rows(),
                    received.mask_rows(), fp16=True)

    def select(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        candidates = reachable(ctx, rnd)
        self._probe(devices, ctx, rnd, candidates)
        known = candidates & (self.scored_round >= 0)
        if self.metric == "cosine":
            chosen = threshold_select(self.scores, known, self.cfg.delta, self.cfg.k_min, ctx.k_max, tie_rank=ctx.ids)
        else:
            chosen = topk_select(self.scores, known, ctx.k_max, tie_rank=ctx.ids)
        self.neighbours = chosen
        return chosen

    def observe(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        """Refresh the scores of the senders whose models were just received."""
        if len(inbox) == 0:
            return
        start, stop = self._scope(ctx)
        every = torch.arange(len(inbox))
        values, masks = inbox.values(every, start, stop), inbox.masks(every, start, stop)
        if self.metric == "cosine":  # the update the sender's model carries, at sketch precision
            values = (values - devices.initial[None, start:stop] * masks).half().float()
        self._store(devices, ctx, rnd, inbox.receivers, inbox.senders, values, masks, fp16=False)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "scored_round": self.scored_round, "neighbours": self.neighbours}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores, self.scored_round, self.neighbours = state["scores"], state["scored_round"], state["neighbours"]


def _probe_eligible(selection: SimilaritySelection, candidates: torch.Tensor, rows: torch.Tensor,
                    cols: torch.Tensor) -> torch.Tensor:
    """Whether (rows[p], cols[p]) may be probed: a live candidate, not a current neighbour, not itself."""
    return candidates[rows, cols] & ~selection.neighbours[rows, cols] & (rows != cols)


def sample_never_scored(selection: SimilaritySelection, ctx: RunContext, round_number: int, candidates: torch.Tensor,
                        rows: torch.Tensor, budget: int, attempts_per_probe: int = 4
                        ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """`budget` never-scored eligible candidates per row, drawn uniformly without replacement by rejection.

    Never-scored candidates are the stalest, so when a row has at least `budget` of them the exact rule ("stalest
    first, random tie-break") is a uniform draw among them — found here with a few random draws of a device id per
    row (draw a of device i is its "probe" stream's number a) instead of ranking a dense [N, N] priority (at 10,000
    devices almost every candidate is never scored). Returns the pairs drawn and the rows that did not get `budget`
    of them (few left, or unlucky) for the exact ranking.
    """
    n = candidates.shape[1]
    row_of_id = ctx.rows_of(torch.arange(n))
    got = torch.full((len(rows), budget), -1, dtype=torch.long)
    filled = torch.zeros(len(rows), dtype=torch.long)
    pending = torch.arange(len(rows))
    for attempt in range(attempts_per_probe * budget + 4):
        if len(pending) == 0:
            break
        r = rows[pending]
        u = ctx.streams.uniform("probe", round_number, ctx.ids[r], torch.tensor([attempt]))[:, 0]
        draw = row_of_id[(u * n).long().clamp_max(n - 1)]
        ok = _probe_eligible(selection, candidates, r, draw) & (selection.scored_round[r, draw] < 0)
        ok &= ~(got[pending] == draw[:, None]).any(dim=1)  # without replacement
        hit = pending[ok]
        got[hit, filled[hit]] = draw[ok]
        filled[hit] += 1
        pending = pending[filled[pending] < budget]
    done = filled >= budget
    pair_rows = rows[done].repeat_interleave(budget)
    return (pair_rows, got[done].flatten()), rows[~done]


def stalest_first(selection: SimilaritySelection, ctx: RunContext, round_number: int, candidates: torch.Tensor,
                  rows: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact rule on the given rows: the `budget` eligible candidates scored longest ago (never = stalest), ties
    broken by uniform noise (device i's "probe-order" stream, one number per candidate id); ages are small integers,
    so float32 keeps the noise."""
    scored = selection.scored_round[rows]
    age = torch.where(scored < 0, round_number + 1, round_number - scored)  # never scored: staler than anything
    priority = ctx.streams.uniform("probe-order", round_number, ctx.ids[rows], ctx.ids) + age
    local = torch.arange(len(rows))
    eligible = candidates[rows] & ~selection.neighbours[rows]
    eligible[local, rows] = False
    picked = best_per_row(priority.masked_fill_(~eligible, float("-inf")),
                          torch.full((len(rows),), budget, dtype=torch.long), tie_rank=ctx.ids)
    r, c = torch.nonzero(picked, as_tuple=True)
    return rows[r], c


class RandomLikeSelection(Selector):
    """dpmn-r: as many neighbours as DPMN's rule would pick, but drawn uniformly from the participating candidates."""

    probes = True

    def __init__(self, cfg: NeighbourConfig) -> None:
        self.inner = SimilaritySelection(cfg, "cosine")

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        self.inner.start(ctx, devices)

    def select(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        chosen = self.inner.select(devices, ctx, rnd)
        candidates = reachable(ctx, rnd)
        noise = ctx.streams.uniform("random-neighbours", rnd.number, ctx.ids, ctx.ids)
        self.inner.neighbours = random_select(candidates, chosen.sum(dim=1), noise, tie_rank=ctx.ids)
        return self.inner.neighbours

    def observe(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        self.inner.observe(devices, ctx, rnd, inbox)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
