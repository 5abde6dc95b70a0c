"""fedmf: federated matrix factorisation (Ammad-ud-din et al. 2019; Chai et al. 2020).

User factors stay on the device; item-factor (and item-bias) deltas are uploaded and the server averages each item
over the clients that touched it.
"""

from __future__ import annotations

from fedge.recsys.algorithms.base import Context
from fedge.recsys.algorithms.federated import FederatedRecommender


def build(ctx: Context) -> FederatedRecommender:
    return FederatedRecommender("fedmf", ctx.model("mf"), ctx)
