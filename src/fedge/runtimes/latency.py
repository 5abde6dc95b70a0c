"""Simulated wall-clock time, so results can be plotted against time and not only rounds.

Model (configured in `latency:`, off by default):

* every device belongs to a link class (drawn once over device ids from the "link-classes" stream by the classes'
  fractions) with a compute throughput (samples × epochs per second) and an uplink/downlink bandwidth;
* each round, each participant is a straggler with probability `straggler_probability` (its own "stragglers" draw
  of the round), its compute then taking `straggler_slowdown` times longer (after the straggler model of Bonawitz
  et al., "Towards federated learning at scale", MLSys 2019);
* a device's time = compute + the bytes it sent / uplink + the bytes it received / downlink, both taken from the
  ledger (every message the device sent or received this round);
* a round lasts as long as its slowest participant (synchronous rounds), plus, when any bytes crossed the backhaul
  to the cloud, backhaul bytes / backhaul bandwidth + one round-trip;
* with `deadline_s` > 0 the server does not wait: a participant whose compute plus upload of its model would not
  be done by the deadline is dropped from the round (it neither trains usefully nor exchanges), as in FedCS
  (Nishio and Yonetani, ICC 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedge.core.streams import Streams, generator
from fedge.experiment import LatencyConfig


@dataclass
class LatencyModel:
    cfg: LatencyConfig
    streams: Streams
    ids: torch.Tensor  # [N] device id of each row
    speed: torch.Tensor  # [N] samples per second
    uplink: torch.Tensor  # [N] bytes per second
    downlink: torch.Tensor  # [N] bytes per second
    work: torch.Tensor  # [N] samples × epochs per round

    @staticmethod
    def create(cfg: LatencyConfig, seed: int, ids: torch.Tensor, data_sizes: torch.Tensor,
               epochs: int) -> LatencyModel:
        """`data_sizes` per row; link classes are drawn over device ids."""
        n = len(ids)
        speed, up, down = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        order = torch.randperm(n, generator=generator(seed, "link-classes"))
        start = 0
        for number, cls in enumerate(cfg.classes):
            count = n - start if number == len(cfg.classes) - 1 else int(round(cls.fraction * n))
            members = order[start:start + count]
            speed[members] = cls.samples_per_second
            up[members] = cls.uplink_mbps * 1e6 / 8
            down[members] = cls.downlink_mbps * 1e6 / 8
            start += count
        work = data_sizes.to(torch.float32) * epochs
        return LatencyModel(cfg, Streams(seed), ids, speed[ids], up[ids], down[ids], work)

    def compute_time(self, round_number: int) -> torch.Tensor:
        """[N] seconds of local training this round, stragglers included."""
        slow = self.streams.uniform("stragglers", round_number, self.ids, 1)[:, 0] < self.cfg.straggler_probability
        factor = torch.where(slow, torch.full_like(self.speed, self.cfg.straggler_slowdown),
                             torch.ones_like(self.speed))
        return self.work / self.speed * factor

    def drop_late(self, compute: torch.Tensor, online: torch.Tensor, model_bytes: int) -> torch.Tensor:
        """Participants that would not finish compute + one model upload by the deadline (none without one)."""
        deadline = self.cfg.deadline_s
        if deadline <= 0:
            return torch.zeros_like(online)
        return online & (compute + model_bytes / self.uplink > deadline)

    def round_time(self, compute: torch.Tensor, participants: torch.Tensor, sent: torch.Tensor,
                   received: torch.Tensor, backhaul_bytes: int) -> float:
        """Seconds this round took: slowest participant, then the backhaul transfer if any."""
        per_device = compute + sent.to(torch.float32) / self.uplink + received.to(torch.float32) / self.downlink
        slowest = float(per_device[participants].max()) if bool(participants.any()) else 0.0
        if backhaul_bytes > 0:
            slowest += backhaul_bytes * 8 / (self.cfg.backhaul_mbps * 1e6) + self.cfg.backhaul_rtt_s
        return slowest
