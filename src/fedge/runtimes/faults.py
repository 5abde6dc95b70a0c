"""A seeded fault model that the round loop consults at the start of every round.

Four kinds of fault, all configured in `faults:` (fedge.experiment.FaultConfig) and all off by default:

* per-round device failure: each live device misses the round (no training, no exchange) with probability p;
* permanent exit: a fraction of devices leave the federation for good, each at a uniformly drawn round;
* late join: a fraction of devices are absent until a uniformly drawn round, then take part as usual;
* cluster-leader failure (hfl): each edge server is down for the round with probability q; its devices re-attach
  to the nearest live leader or fall back to the cloud (fedge.algorithms.components.hierarchy).

Determinism and resumability: the join/exit schedule is drawn once from the fault stream of the seed, and each
round's failures come from a generator seeded by (seed, round). No generator state is carried between rounds, so a
resumed run draws exactly the failures an uninterrupted one would, without any RNG state in the checkpoint.
The device draws come before the leader draws, so switching leader failures on never changes which devices fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.algorithms.state import FederationState
from fedge.experiment import ExperimentConfig
from fedge.runtimes.setup import stream

FAULT_STREAM = 5


def round_generator(seed: int, purpose: int, round_number: int) -> torch.Generator:
    """A generator for one purpose in one round: independent of every other round, so nothing to checkpoint."""
    base = stream(seed, purpose).initial_seed()
    return torch.Generator().manual_seed((base + round_number * 1_000_000_007) % (1 << 62))


@dataclass
class FaultModel:
    config: ExperimentConfig
    join_round: torch.Tensor  # [N] long: first round the device takes part (1 = from the start)
    exit_round: torch.Tensor  # [N] long: first round the device is gone (rounds + 1 = never)

    @staticmethod
    def create(config: ExperimentConfig) -> FaultModel:
        n, rounds, cfg = config.data.devices, config.rounds, config.faults
        g = stream(config.seed, FAULT_STREAM)
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
        return FaultModel(config, join, leave)

    @property
    def enabled(self) -> bool:
        cfg = self.config.faults
        return any(v > 0 for v in (cfg.device_failure, cfg.exit_fraction, cfg.late_join_fraction, cfg.leader_failure))

    def members(self, round_number: int) -> torch.Tensor:
        """[N] bool: devices in the federation in this round (joined and not yet exited)."""
        return (self.join_round <= round_number) & (self.exit_round > round_number)

    def begin_round(self, state: FederationState, round_number: int) -> torch.Tensor:
        """Update `state.alive` and `state.leader_up` for `round_number`; returns the devices online this round."""
        cfg = self.config.faults
        state.alive = self.members(round_number)
        g = round_generator(self.config.seed, FAULT_STREAM, round_number)
        failed = torch.rand(state.num_devices, generator=g) < cfg.device_failure
        leaders = self.config.hierarchy.clusters
        state.leader_up = torch.rand(leaders, generator=g) >= cfg.leader_failure
        return state.alive & ~failed
