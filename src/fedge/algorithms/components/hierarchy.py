"""Two-level aggregation: devices → cluster leaders (edge servers) → cloud, as in HierFAVG (Liu et al., "Client-edge-
cloud hierarchical federated learning", ICC 2020) and the edge-leader framework of Lim et al. (IEEE TPDS 2021).

Every round, each participant downloads its edge server's model (unless its own model still is that model), trains
κ1 = `train.epochs` local epochs and uploads its model to its edge server, which averages the uploads weighted by
data size (edge aggregation). Every κ2-th round (`hierarchy.kappa2`) the edge servers that received uploads send
their models to the cloud, which averages them weighted by the data mass behind each and sends the global model back
to every reachable edge server (cloud aggregation). With data-size weights the two levels compose to the flat FedAvg
average of the participants: with κ2 = 1 and one cluster hfl is FedAvg, and the saving is in the backhaul: K edge
models cross it every κ2 rounds instead of N device models every round. Devices are evaluated with the model their
edge server holds after the round (what they would download next).

Clusters (`hierarchy.clustering`), fixed at the first aggregation:
* `assignment`: given in the config, one cluster id per device id;
* `proximity`: each device joins the nearest edge server (positions in `ctx.coordinates`/`ctx.edge_coordinates`,
  drawn by the runtime; without positions, contiguous blocks of device ids);
* `similarity`: after the first round's training the participants upload their updates once (device-server
  messages) and the cloud picks K medoids by farthest-point traversal of the overlap cosine (fedge.core.similarity),
  then assigns each device to its most similar medoid (devices that did not upload: contiguous blocks of ids).

Secure aggregation (`secure.aggregation: secagg | secagg+`, docs/secure.md): each edge server (and the cloud, for
devices attached to it directly) runs one SecAgg(+) round with the devices attached to it (`SecureUploads`,
secure_averaging.py; Bonawitz et al. CCS 2017, Bell et al. CCS 2020), so it learns only its cluster's weighted sum;
an aborted round leaves that edge's model as it was. The cloud level stays plain: edge models are sums already.
With `secure.aggregation: ckks` the uploads are CKKS-encrypted instead (`EncryptedUploads`, he_edges.py): each
aggregator adds ciphertexts and one of its devices decrypts the cluster's mean for it.

Leader failure (`Round.leaders_up`, set by the fault model): devices of a failed leader attach for that round to the
nearest live leader (`hierarchy.reattach: nearest`), or, with none alive or `reattach: cloud`, to the cloud directly,
which then acts as their edge server (its model is the last global model or the last average of such devices).
"""

from __future__ import annotations

from typing import Any

import torch

from fedge.algorithms.base import Combiner
from fedge.algorithms.components.combining import aggregate_updates, upload_body
from fedge.algorithms.components.he_edges import EncryptedUploads
from fedge.algorithms.components.secure_averaging import SecureUploads
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.core.aggregation import weighted_average
from fedge.core.similarity import overlap_cosine
from fedge.experiment import HierarchyConfig, ServerConfig
from fedge.messaging import Inbox, Kind, Models, Role, route
from fedge.privacy.mechanisms import UserLevel


def similarity_clusters(updates: torch.Tensor, masks: torch.Tensor, clusters: int) -> torch.Tensor:
    """[N] cluster ids: K medoids by farthest-point traversal of the overlap cosine, then most-similar medoid."""
    sim = overlap_cosine(updates, masks)
    n = sim.shape[0]
    k = min(clusters, n)
    medoids = [int(sim.sum(dim=1).argmax())]  # the most central device first
    while len(medoids) < k:
        closest = sim[:, medoids].max(dim=1).values
        closest[medoids] = float("inf")
        medoids.append(int(closest.argmin()))
    assigned = sim[:, medoids].argmax(dim=1)
    assigned[torch.tensor(medoids)] = torch.arange(k)
    return assigned


class EdgeCloudAveraging(Combiner):
    def __init__(self, cfg: HierarchyConfig, server: ServerConfig, dp: UserLevel | None = None,
                 secure: SecureUploads | EncryptedUploads | None = None) -> None:
        self.cfg, self.weighting, self.dp = cfg, server.weighting, dp
        self.secure = secure  # masked (secagg, secagg+) or encrypted (ckks) device → edge uploads
        k = cfg.clusters
        self.cluster: torch.Tensor | None = None  # [N] home cluster of each row, fixed at the first aggregation
        self.models = torch.zeros(k + 1, 0)  # [K+1, d]: edge servers' models; row K: the cloud's
        self.version = torch.zeros(k + 1, dtype=torch.long)  # version of each of those models
        self.latest = 0  # the last version number handed out
        self.held = torch.zeros(0, dtype=torch.long)  # [N]: version of the model a device's row holds; -1: trained
        self.group = torch.zeros(0, dtype=torch.long)  # [N]: where each device is attached this round (K: cloud)

    def start(self, ctx: RunContext, devices: DeviceState) -> None:
        k = self.cfg.clusters
        self.models = devices.initial[None, :].repeat(k + 1, 1)
        self.version, self.latest = torch.zeros(k + 1, dtype=torch.long), 0
        self.held = torch.zeros(ctx.num_devices, dtype=torch.long)
        self.cluster = None if self.cfg.clustering == "similarity" else self.fixed_clusters(ctx)
        self.group = self.cluster.clone() if self.cluster is not None else torch.zeros(ctx.num_devices,
                                                                                       dtype=torch.long)

    def fixed_clusters(self, ctx: RunContext) -> torch.Tensor:
        """[N] home cluster of each row, for `assignment` and `proximity` clustering (and the similarity fallback)."""
        k, n = self.cfg.clusters, ctx.num_devices
        if self.cfg.clustering == "assignment":
            return torch.tensor(self.cfg.assignment, dtype=torch.long)[ctx.ids]
        if self.cfg.clustering == "proximity" and ctx.coordinates is not None and ctx.edge_coordinates is not None:
            return torch.cdist(ctx.coordinates, ctx.edge_coordinates).argmin(dim=1)
        return ctx.ids * k // n

    def attachment(self, ctx: RunContext, rnd: Round) -> torch.Tensor:
        """[N] where each device is attached this round: its leader, a re-attachment target, or K (the cloud)."""
        k, home = self.cfg.clusters, self.cluster
        assert home is not None
        up = rnd.leaders_up if rnd.leaders_up is not None and len(rnd.leaders_up) == k else \
            torch.ones(k, dtype=torch.bool)
        orphaned = ~up[home]
        if not bool(orphaned.any()):
            return home
        if self.cfg.reattach == "cloud" or not bool(up.any()):
            return torch.where(orphaned, torch.full_like(home, k), home)
        if ctx.coordinates is not None and ctx.edge_coordinates is not None:
            distance = torch.cdist(ctx.coordinates, ctx.edge_coordinates)
        else:  # no positions: leaders are on a line in id order
            distance = (home[:, None] - torch.arange(k)[None, :]).abs().to(torch.float32)
        distance[:, ~up] = float("inf")
        return torch.where(orphaned, distance.argmin(dim=1), home)

    def _down(self, ctx: RunContext, rnd: Round, devices: DeviceState, rows: torch.Tensor) -> None:
        """Send each of `rows` the model of the group it is attached to (edge servers, or the cloud for K)."""
        k = self.cfg.clusters
        for to_cloud in (False, True):
            mine = rows[(self.group[rows] == k) == to_cloud]
            if len(mine) == 0:
                continue
            sender_role, senders = (Role.SERVER, 0) if to_cloud else (Role.EDGE, self.group[mine])
            got = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, sender_role, Role.DEVICE, senders, mine),
                                          Models(self.models, self.group[mine], value_dtype=ctx.payload_dtype))
            assert isinstance(got.body, Models)
            devices.bank[got.route.receivers] = got.body.rows()
            self.held[got.route.receivers] = self.version[self.group[got.route.receivers]]

    def distribute(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> None:
        if self.cluster is None:  # similarity clustering before the first aggregation: everyone holds x0
            return
        self.group = self.attachment(ctx, rnd)
        stale = rnd.participants & (self.held != self.version[self.group])
        self._down(ctx, rnd, devices, ctx.by_id(torch.nonzero(stale).flatten()))

    def _cluster_by_similarity(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        """Participants upload their updates to the cloud once; it clusters what it received."""
        senders = ctx.by_id(torch.nonzero(rnd.participants).flatten())
        clusters = self.fixed_clusters(ctx)
        if len(senders) == 0:
            return clusters
        up = ctx.transport.gather(route(Kind.MODEL, rnd.number, Role.DEVICE, Role.SERVER, senders, 0),
                                  Models.one_each(devices.updates()[senders], value_dtype=ctx.payload_dtype))
        assert isinstance(up.body, Models)
        clusters[up.route.senders] = similarity_clusters(up.body.rows(), devices.masks[up.route.senders],
                                                         self.cfg.clusters)
        return clusters

    def _new_version(self) -> int:
        self.latest += 1
        return self.latest

    def combine(self, devices: DeviceState, ctx: RunContext, rnd: Round, inbox: Inbox) -> None:
        """Edge aggregation every round, cloud aggregation every κ2-th."""
        k = self.cfg.clusters
        if self.cluster is None:
            self.cluster = self._cluster_by_similarity(devices, ctx, rnd)
            self.group = self.attachment(ctx, rnd)
        senders = ctx.by_id(torch.nonzero(rnd.participants).flatten())
        if len(senders) == 0:
            return
        self.held[senders] = -1  # they trained: their rows are no longer their edge server's model
        if self.dp is not None and ctx.privacy is not None:  # every online device was subject to the sampling
            self.dp.observe_population(int(rnd.online.sum()))
            ctx.privacy.record(torch.nonzero(rnd.online).flatten(), self.dp.update_noise_multiplier,
                               self.dp.cfg.sample_rate)
        masses = torch.zeros(k + 1)
        if self.secure is not None:
            self._secure_edges(devices, ctx, rnd, senders, masses)
        for to_cloud in () if self.secure is not None else (False, True):
            mine = senders[(self.group[senders] == k) == to_cloud]
            if len(mine) == 0:
                continue
            receiver_role, receivers = (Role.SERVER, 0) if to_cloud else (Role.EDGE, self.group[mine])
            updates = devices.bank[mine] - self.models[self.group[mine]]
            up = ctx.transport.gather(route(Kind.MODEL, rnd.number, Role.DEVICE, receiver_role, mine, receivers),
                                      upload_body(updates, self.dp, ctx.payload_dtype))
            assert isinstance(up.body, Models)
            values, from_rows = up.body.rows(), up.route.senders
            at = up.route.receivers if not to_cloud else torch.full_like(from_rows, k)
            for g in torch.unique(at).tolist():
                here = torch.nonzero(at == g).flatten()
                population = rnd.online & (self.group == g)
                generator = ctx.streams.generator("dp-noise", g, rnd.number) if self.dp is not None else None
                step, masses[g] = aggregate_updates(ctx, values[here], from_rows[here], self.weighting, self.dp,
                                                    population, generator)
                self.models[g] = self.models[g] + step
                self.version[g] = self._new_version()
        if rnd.number % self.cfg.kappa2 == 0:
            self._cloud_round(ctx, rnd, masses)

    def _secure_edges(self, devices: DeviceState, ctx: RunContext, rnd: Round, senders: torch.Tensor,
                      masses: torch.Tensor) -> None:
        """Edge aggregation under SecAgg(+) or CKKS: one secure round per aggregator (edge g, or the cloud for
        g = K) over the senders attached to it; sets masses[g] to the weight mass it summed (0 when it aborted)."""
        k = self.cfg.clusters
        assert self.secure is not None
        for g in torch.unique(self.group[senders]).tolist():
            rows = senders[self.group[senders] == g]  # still in id order
            aggregator = (Role.SERVER, 0) if g == k else (Role.EDGE, int(g))
            step = self.secure.step(ctx, rnd, rows, devices.bank[rows] - self.models[g], self.dp,
                                    rnd.online & (self.group == g), aggregator)
            if step is None:  # aborted: this edge's model stays
                continue
            self.models[g] = self.models[g] + step
            self.version[g] = self._new_version()
            masses[g] = self.secure.last["mass"]

    def _cloud_round(self, ctx: RunContext, rnd: Round, masses: torch.Tensor) -> None:
        """Edge servers with uploads send their models up; the cloud averages them (and the devices it served
        directly) by data mass and sends the global model to every reachable edge server."""
        k = self.cfg.clusters
        uploaders = torch.nonzero(masses[:k] > 0).flatten()
        parts, mass = [], []
        if len(uploaders):
            up = ctx.transport.gather(route(Kind.AGGREGATE, rnd.number, Role.EDGE, Role.SERVER, uploaders, 0),
                                      Models.one_each(self.models[uploaders], value_dtype=ctx.payload_dtype))
            assert isinstance(up.body, Models)
            order = torch.argsort(up.route.senders)
            parts.append(up.body.rows()[order])
            mass.append(masses[up.route.senders[order]])
        if masses[k] > 0:  # devices attached to the cloud directly: their average is already there
            parts.append(self.models[k:k + 1])
            mass.append(masses[k:k + 1])
        self.models[k] = weighted_average(torch.cat(parts), torch.cat(mass))
        self.version[k] = self._new_version()
        up_leaders = torch.arange(k) if rnd.leaders_up is None else torch.nonzero(rnd.leaders_up).flatten()
        if len(up_leaders):
            everyone = torch.zeros(len(up_leaders), dtype=torch.long)  # one global model for every leader
            got = ctx.transport.broadcast(route(Kind.DOWNLOAD, rnd.number, Role.SERVER, Role.EDGE, 0, up_leaders),
                                          Models(self.models[k:k + 1].clone(), everyone, value_dtype=ctx.payload_dtype))
            assert isinstance(got.body, Models)
            self.models[got.route.receivers] = got.body.rows()
            self.version[got.route.receivers] = int(self.version[k])

    def served(self, devices: DeviceState, ctx: RunContext, rnd: Round) -> torch.Tensor:
        return self.models[self.group]

    def report_round(self, round_number: int) -> dict[str, Any]:
        return self.secure.report_round(round_number) if isinstance(self.secure, EncryptedUploads) else {}

    def report(self) -> dict[str, Any]:
        return self.secure.report() if isinstance(self.secure, EncryptedUploads) else {}

    def state_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "models": self.models, "version": self.version, "latest": self.latest,
                "held": self.held, "group": self.group, "dp": self.dp.state_dict() if self.dp is not None else None,
                "secure": self.secure.state_dict() if self.secure is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cluster, self.models, self.version = state["cluster"], state["models"], state["version"]
        self.latest, self.held, self.group = int(state["latest"]), state["held"], state["group"]
        if self.dp is not None and state.get("dp") is not None:
            self.dp.load_state_dict(state["dp"])
        if self.secure is not None and state.get("secure") is not None:
            self.secure.load_state_dict(state["secure"])
