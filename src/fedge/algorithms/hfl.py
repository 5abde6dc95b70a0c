"""hfl: hierarchical FedAvg (HierFAVG, Liu et al. ICC 2020) with cluster leaders at edge servers (Lim et al.,
IEEE TPDS 2021): devices → edge leaders every round (κ1 = train.epochs local epochs between edge aggregations),
edge leaders → cloud every κ2 = hierarchy.kappa2 rounds. Under user-level DP each edge server adds the noise to
its devices' clipped updates (DP-HFL). With `secure.aggregation: secagg | secagg+` each edge server learns only
its cluster's sum (SecAgg(+) per edge; the cloud level stays plain); with `ckks` the devices' uploads are
CKKS-encrypted and one device per edge decrypts the cluster's mean for its edge server. See
fedge.algorithms.components.hierarchy, docs/hierarchical.md and docs/secure.md."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ClientSampling, PoissonSampling
from fedge.algorithms.components.he_edges import EncryptedUploads
from fedge.algorithms.components.hierarchy import EdgeCloudAveraging
from fedge.algorithms.components.secure_averaging import SecureUploads
from fedge.algorithms.registry import ALGORITHMS
from fedge.config import ConfigError
from fedge.experiment import ExperimentConfig
from fedge.privacy.mechanisms import user_level


@ALGORITHMS.register("hfl", "hierarchical FedAvg: edge leaders every round, cloud every kappa2 rounds")
def build(config: ExperimentConfig) -> Algorithm:
    dp = user_level(config.privacy)
    sampler = PoissonSampling(config.privacy.sample_rate) if dp else ClientSampling(config.server)
    if config.secure.aggregation != "none" and config.hierarchy.clustering == "similarity":
        raise ConfigError(f"secure.aggregation: {config.secure.aggregation} is not combined with hierarchy.clustering: "
                          f"similarity (the cloud clusters the devices by their plaintext first-round updates, which "
                          f"would reveal them); use proximity or assignment")
    secure: SecureUploads | EncryptedUploads | None = None
    if config.secure.masking:
        secure = SecureUploads(config.secure, config.server.weighting)
    elif config.secure.aggregation == "ckks":
        secure = EncryptedUploads(config.secure, config.server.weighting)
    return Algorithm("hfl", sampler=sampler, combiner=EdgeCloudAveraging(config.hierarchy, config.server, dp, secure))
