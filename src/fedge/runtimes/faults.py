"""A seeded fault model that the round loop consults at the start of every round.

Four kinds of fault, all configured in `faults:` (fedge.experiment.FaultConfig) and all off by default:

* per-round device failure: each member misses the round (no training, no messages) with probability p;
* permanent exit: a fraction of devices leave the federation for good, each at a uniformly drawn round;
* late join: a fraction of devices are absent until a uniformly drawn round, then take part as usual;
* cluster-leader failure (hfl): each edge server is down for the round with probability q; its devices re-attach
  to the nearest live leader or fall back to the cloud (fedge.algorithms.components.hierarchy).

Determinism and resumability: the join/exit schedule is drawn once, over device ids, from the "faults" stream, and
each round's failures are each device's (or leader's) own draw of that round ("device-failure", "leader-failure"
streams). Nothing is carried between rounds, so a resumed run draws exactly the failures an uninterrupted one would,
and a device's failures do not depend on where it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.core.streams import Streams, generator
from fedge.experiment import FaultConfig


@dataclass
class Participation:
    """Who is in the federation and who is reachable this round."""

    members: torch.Tensor  # [N] bool: joined and not yet exited
    online: torch.Tensor  # [N] bool: members that did not fail this round
    leaders_up: torch.Tensor | None  # [K] bool, or None without leader failures


@dataclass
class FaultModel:
    cfg: FaultConfig
    streams: Streams
    ids: torch.Tensor  # [N] device id of each row
    clusters: int
    join_round: torch.Tensor  # [N] long: first round the device takes part (1 = from the start)
    exit_round: torch.Tensor  # [N] long: first round the device is gone (rounds + 1 = never)

    @staticmethod
    def create(cfg: FaultConfig, seed: int, rounds: int, ids: torch.Tensor, clusters: int) -> FaultModel:
        n = len(ids)
        g = generator(seed, "faults")
        join = torch.ones(n, dtype=torch.long)
        leave = torch.full((n,), rounds + 1, dtype=torch.long)
        late = int(round(cfg.late_join_fraction * n))
        exits = int(round(cfg.exit_fraction * n))
        order = torch.randperm(n, generator=g)
        if late and rounds > 1:
            join[order[:late]] = torch.randint(2, rounds + 1, (late,), generator=g)
        order = torch.randperm(n, generator=g)
        if exits and rounds > 1:
            leave[order[:exits]] = torch.randint(2, rounds + 1, (exits,), generator=g)
        return FaultModel(cfg, Streams(seed), ids, clusters, join[ids], leave[ids])

    @property
    def enabled(self) -> bool:
        cfg = self.cfg
        return any(v > 0 for v in (cfg.device_failure, cfg.exit_fraction, cfg.late_join_fraction, cfg.leader_failure))

    def members(self, round_number: int) -> torch.Tensor:
        """[N] bool: devices in the federation in this round (joined and not yet exited)."""
        return (self.join_round <= round_number) & (self.exit_round > round_number)

    def participation(self, round_number: int) -> Participation:
        members = self.members(round_number)
        failed = self.streams.uniform("device-failure", round_number, self.ids, 1)[:, 0] < self.cfg.device_failure
        leaders = torch.arange(self.clusters)
        up = self.streams.uniform("leader-failure", round_number, leaders, 1)[:, 0] >= self.cfg.leader_failure
        return Participation(members, members & ~failed, up)
