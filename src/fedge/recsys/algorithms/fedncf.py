"""fedncf: federated NeuMF (He et al. 2017, federated after Perifanis & Efraimidis 2022).

The user embeddings (GMF and MLP towers) stay on the device; item embeddings are averaged per item over the clients
that touched them, the MLP and output layer over all clients of the round.
"""

from __future__ import annotations

from fedge.recsys.algorithms.base import Context
from fedge.recsys.algorithms.federated import FederatedRecommender


def build(ctx: Context) -> FederatedRecommender:
    return FederatedRecommender("fedncf", ctx.model("neumf"), ctx)
