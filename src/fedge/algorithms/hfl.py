"""hfl: hierarchical FedAvg (HierFAVG, Liu et al. ICC 2020) with cluster leaders at edge servers (Lim et al.,
IEEE TPDS 2021): devices → edge leaders every round (κ1 = train.epochs local epochs between edge aggregations),
edge leaders → cloud every κ2 = hierarchy.kappa2 rounds. Under user-level DP each edge server adds the noise to
its devices' clipped updates (DP-HFL). With `secure.aggregation: secagg | secagg+` each edge server learns only
its cluster's sum (SecAgg(+) per edge; the cloud level stays plain). See fedge.algorithms.components.hierarchy,
docs/hierarchical.md and docs/secure.md."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ClientSampling, PoissonSampling
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.components.secure_averaging import SecureUploads
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig
from fedge.privacy.mechanisms import user_level


@ALGORITHMS.register("hfl", "hierarchical FedAvg: edge leaders every round, cloud every kappa2 rounds")
def build(config: ExperimentConfig) -> Algorithm:
    dp = user_level(config.privacy)
    sampler = PoissonSampling(config.privacy.sample_rate) if dp else ClientSampling(config.server)
    secure = SecureUploads(config.secure, config.server.weighting) if config.secure.masking else None
    return Algorithm("hfl", sampler=sampler, combiner=EdgeCloudAveraging(config.hierarchy, config.server, dp, secure))
