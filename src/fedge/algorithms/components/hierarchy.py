"""Two-level aggregation: devices → cluster leaders (edge servers) → cloud, as in HierFAVG (Liu et al., "Client-edge-
cloud hierarchical federated learning", ICC 2020) and the edge-leader framework of Lim et al. (IEEE TPDS 2021).

Every round, each participant trains κ1 = `train.epochs` local epochs and uploads its model to its cluster's
leader, which averages its devices' models weighted by data size (edge aggregation) and sends the result back.
Every κ2-th round (`hierarchy.kappa2`) the leaders also upload their edge models to the cloud, which averages them
weighted by the data mass behind each, and every member receives the global model (cloud aggregation).
With data-size weights the two levels compose to the flat FedAvg average of the participants: with κ2 = 1 and one
cluster hfl is FedAvg, and the saving is in the backhaul: K edge models cross it every κ2 rounds instead of N
device models every round.

Clusters (`hierarchy.clustering`), fixed at the first aggregation and kept in `state.cluster`:
* `assignment`: given in the config, one cluster id per device;
* `proximity`: each device joins the nearest edge server (positions in `ctx.coordinates`/`ctx.edge_coordinates`,
  drawn by the runtime; without positions, contiguous blocks of device ids);
* `similarity`: after the first round's training the devices upload their updates once (backhaul bytes counted)
  and the cloud picks K medoids by farthest-point traversal of the overlap cosine (fedge.core.similarity), then
  assigns each device to its most similar medoid.

Leader failure (`state.leader_up`, set by the fault model): devices of a failed leader re-attach for that round to
the nearest live leader (`hierarchy.reattach: nearest`), or, with none alive or `reattach: cloud`, talk to the
cloud directly over the backhaul: the cloud then acts as their edge for that round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedge.algorithms.components.combining import client_weights
from fedge.algorithms.context import RunContext
from fedge.algorithms.state import FederationState
from fedge.core.aggregation import weighted_average
from fedge.core.codec import encoded_size
from fedge.core.similarity import overlap_cosine

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


class EdgeCloudAveraging:
    def penalty(self, state: FederationState, ctx: RunContext) -> Penalty | None:
        return None

    def home_clusters(self, state: FederationState, ctx: RunContext) -> tuple[torch.Tensor, int]:
        """([N] home cluster per device, backhaul bytes the clustering needed)."""
        cfg, n = ctx.config.hierarchy, state.num_devices
        if cfg.clustering == "assignment":
            return torch.tensor(cfg.assignment, dtype=torch.long), 0
        if cfg.clustering == "similarity":
            uploads = int(state.alive.sum()) * encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False)
            return similarity_clusters(state.updates(), state.masks, cfg.clusters), uploads
        if ctx.coordinates is not None and ctx.edge_coordinates is not None:
            return torch.cdist(ctx.coordinates, ctx.edge_coordinates).argmin(dim=1), 0
        return torch.arange(n) * cfg.clusters // n, 0

    def attachment(self, state: FederationState, ctx: RunContext) -> torch.Tensor:
        """[N] group of each device this round: its leader, a re-attachment target, or K (the cloud directly)."""
        k = ctx.config.hierarchy.clusters
        home = state.cluster
        assert home is not None
        up = state.leader_up if state.leader_up is not None and len(state.leader_up) == k else \
            torch.ones(k, dtype=torch.bool)
        orphaned = ~up[home]
        if not bool(orphaned.any()):
            return home
        if ctx.config.hierarchy.reattach == "cloud" or not bool(up.any()):
            return torch.where(orphaned, torch.full_like(home, k), home)
        if ctx.coordinates is not None and ctx.edge_coordinates is not None:
            distance = torch.cdist(ctx.coordinates, ctx.edge_coordinates)
        else:  # no positions: leaders are on a line in id order
            distance = (home[:, None] - torch.arange(k)[None, :]).abs().to(torch.float32)
        distance[:, ~up] = float("inf")
        return torch.where(orphaned, distance.argmin(dim=1), home)

    def combine(self, state: FederationState, ctx: RunContext) -> int:
        """Edge aggregation every round, cloud aggregation every κ2-th; returns the bytes moved this round."""
        cfg = ctx.config.hierarchy
        k = cfg.clusters
        senders = state.alive
        members = state.members if state.members is not None else state.alive
        size = encoded_size(ctx.dim, ctx.dim, ctx.config.payload_dtype, sparse=False)
        edge_bytes = backhaul_bytes = 0
        if state.cluster is None:
            state.cluster, backhaul_bytes = self.home_clusters(state, ctx)
        if not bool(senders.any()):
            state.bytes_backhaul_total += backhaul_bytes
            return backhaul_bytes
        group = self.attachment(state, ctx)
        weights = client_weights(ctx, senders)
        models: dict[int, torch.Tensor] = {}
        masses: dict[int, torch.Tensor] = {}
        for g in range(k + 1):
            w = torch.where(group == g, weights, torch.zeros(()))
            if float(w.sum()) > 0:
                models[g], masses[g] = weighted_average(state.bank, w), w.sum()
        uploads_edge = int((senders & (group < k)).sum())
        uploads_cloud = int((senders & (group == k)).sum())
        edge_bytes += 2 * uploads_edge * size  # device → leader, leader → device
        backhaul_bytes += 2 * uploads_cloud * size  # orphaned devices talk to the cloud directly
        if state.round % cfg.kappa2 == 0:
            stacked = torch.stack([models[g] for g in models])
            mass = torch.stack([masses[g] for g in models])
            global_model = weighted_average(stacked, mass)
            backhaul_bytes += 2 * sum(1 for g in models if g < k) * size  # leader → cloud, cloud → leader
            state.bank = torch.where(members[:, None], global_model[None, :].expand_as(state.bank), state.bank)
        else:
            bank = state.bank.clone()
            for g, model in models.items():
                bank[members & (group == g)] = model
            state.bank = bank
        state.bytes_edge_total += edge_bytes
        state.bytes_backhaul_total += backhaul_bytes
        return edge_bytes + backhaul_bytes
