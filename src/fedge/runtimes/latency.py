"""Simulated wall-clock time, so results can be plotted against time and not only rounds.

Model (configured in `latency:`, off by default):

* every device belongs to a link class (drawn once from the placement stream by the classes' fractions) with a
  compute throughput (samples × epochs per second) and an uplink/downlink bandwidth;
* each round, each participant is a straggler with probability `straggler_probability`, its compute then taking
  `straggler_slowdown` times longer (after the straggler model of Bonawitz et al., "Towards federated learning at
  scale", MLSys 2019);
* a device's time = compute + its bytes sent / uplink + its bytes received / downlink;
* a round lasts as long as its slowest participant (synchronous rounds), plus, when any bytes crossed the backhaul
  to the cloud, backhaul bytes / backhaul bandwidth + one round-trip;
* with `deadline_s` > 0 the server does not wait: a participant whose compute plus upload of its model would not
  be done by the deadline is dropped from the round (it neither trains usefully nor exchanges), as in FedCS
  (Nishio and Yonetani, ICC 2019).

Device and edge-server positions in the unit square (used by hfl's proximity clustering and leader re-attachment)
are drawn here too, from their own stream. Per-round draws use `faults.round_generator`: nothing to checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.experiment import ExperimentConfig
from fedge.runtimes.faults import round_generator
from fedge.runtimes.setup import stream

LATENCY_STREAM, PLACEMENT_STREAM = 6, 7


def placement(config: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, 2] device positions, [K, 2] edge-server positions), uniform in the unit square, seeded."""
    g = stream(config.seed, PLACEMENT_STREAM)
    devices = torch.rand(config.data.devices, 2, generator=g)
    edges = torch.rand(config.hierarchy.clusters, 2, generator=g)
    return devices, edges


@dataclass
class LatencyModel:
    config: ExperimentConfig
    speed: torch.Tensor  # [N] samples per second
    uplink: torch.Tensor  # [N] bytes per second
    downlink: torch.Tensor  # [N] bytes per second
    work: torch.Tensor  # [N] samples × epochs per round

    @staticmethod
    def create(config: ExperimentConfig, data_sizes: torch.Tensor) -> LatencyModel:
        n, cfg = config.data.devices, config.latency
        speed, up, down = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        order = torch.randperm(n, generator=stream(config.seed, LATENCY_STREAM))
        start = 0
        for number, cls in enumerate(cfg.classes):
            count = n - start if number == len(cfg.classes) - 1 else int(round(cls.fraction * n))
            members = order[start:start + count]
            speed[members] = cls.samples_per_second
            up[members] = cls.uplink_mbps * 1e6 / 8
            down[members] = cls.downlink_mbps * 1e6 / 8
            start += count
        work = data_sizes.to(torch.float32) * config.train.epochs
        return LatencyModel(config, speed, up, down, work)

    def compute_time(self, round_number: int) -> torch.Tensor:
        """[N] seconds of local training this round, stragglers included."""
        cfg = self.config.latency
        g = round_generator(self.config.seed, LATENCY_STREAM, round_number)
        slow = torch.rand(len(self.speed), generator=g) < cfg.straggler_probability
        factor = torch.where(slow, torch.full_like(self.speed, cfg.straggler_slowdown), torch.ones_like(self.speed))
        return self.work / self.speed * factor

    def drop_late(self, compute: torch.Tensor, online: torch.Tensor, model_bytes: int) -> torch.Tensor:
        """Participants that would not finish compute + one model upload by the deadline (none without one)."""
        deadline = self.config.latency.deadline_s
        if deadline <= 0:
            return torch.zeros_like(online)
        return online & (compute + model_bytes / self.uplink > deadline)

    def round_time(self, compute: torch.Tensor, participants: torch.Tensor, sent: torch.Tensor,
                   received: torch.Tensor, backhaul_bytes: int) -> float:
        """Seconds this round took: slowest participant, then the backhaul transfer if any."""
        per_device = compute + sent / self.uplink + received / self.downlink
        slowest = float(per_device[participants].max()) if bool(participants.any()) else 0.0
        cfg = self.config.latency
        if backhaul_bytes > 0:
            slowest += backhaul_bytes * 8 / (cfg.backhaul_mbps * 1e6) + cfg.backhaul_rtt_s
        return slowest
