"""The registry of recommendation algorithms: name -> builder(Context) returning an object on the `RecAlgorithm`
contract (`init_state`, `client_round`, `server_aggregate`, `scoring_state`, `predict`).

Libraries add their own with `@RECSYS_ALGORITHMS.register("name", "what it does")` over a builder. A run checks
its configured name here where it starts (`fedge.recsys.runner.run`, `fedge recsys`): an unknown name is a
`fedge.config.ConfigError` listing the choices.
"""

from __future__ import annotations

from collections.abc import Callable

from fedge.recsys.algorithms import centralized, decentralized, fedmeta, fedmf, fedncf
from fedge.recsys.algorithms.base import Context, RecAlgorithm
from fedge.registry import Registry

RECSYS_ALGORITHMS: Registry[Callable[[Context], RecAlgorithm]] = Registry("recsys algorithm")
RECSYS_ALGORITHMS.add("fedmf", fedmf.build, "federated matrix factorisation, private user factors")
RECSYS_ALGORITHMS.add("fedncf", fedncf.build, "federated NeuMF, private user embeddings")
RECSYS_ALGORITHMS.add("fedmeta", fedmeta.build, "first-order MAML / Per-FedAvg, stateless clients")
RECSYS_ALGORITHMS.add("dfedmf", decentralized.build_mf, "fedmf over edge servers mixing with neighbours")
RECSYS_ALGORITHMS.add("dfedncf", decentralized.build_ncf, "fedncf over edge servers mixing with neighbours")
RECSYS_ALGORITHMS.add("central-mf", centralized.build_mf, "centralized MF on pooled data (reference)")
RECSYS_ALGORITHMS.add("central-neumf", centralized.build_neumf, "centralized NeuMF on pooled data (reference)")


def build(ctx: Context) -> RecAlgorithm:
    """The configured algorithm (`ctx.cfg.algorithm`), built on `ctx`."""
    algorithm = RECSYS_ALGORITHMS.create(ctx.cfg.algorithm, ctx)
    return algorithm  # type: ignore[return-value]


__all__ = ["RECSYS_ALGORITHMS", "build"]
