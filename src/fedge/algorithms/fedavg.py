"""FedAvg (McMahan et al. 2017): client-server; each round the server samples a fraction C of the online devices
(`server.sample_fraction`, default 1: everyone), they download the server's model, train E local epochs and upload
their updates, whose average, weighted by data size (`server.weighting`), the server adds to its model. Under
user-level DP (`privacy.mechanism: user`): DP-FedAvg (McMahan et al. 2018), Poisson sampling at
`privacy.sample_rate`, clipped updates and a noisy sum (fedge.privacy.mechanisms). With `secure.aggregation:
secagg | secagg+` the uploads are masked and the server learns only their sum; with `ckks` they are encrypted and
the server adds ciphertexts, the devices decrypt the aggregate (docs/secure.md); under DP the devices add the noise
before masking or encrypting."""

from __future__ import annotations

from fedge.algorithms.base import Algorithm
from fedge.algorithms.components.combining import ClientSampling, PoissonSampling, ServerAveraging
from fedge.algorithms.components.he_averaging import EncryptedAveraging
from fedge.algorithms.components.secure_averaging import SecureUploads
from fedge.algorithms.registry import ALGORITHMS
from fedge.experiment import ExperimentConfig
from fedge.privacy.mechanisms import user_level


@ALGORITHMS.register("fedavg", "client-server averaging weighted by data size, with client sampling")
def build(config: ExperimentConfig) -> Algorithm:
    dp = user_level(config.privacy)
    sampler = PoissonSampling(config.privacy.sample_rate) if dp else ClientSampling(config.server)
    if config.secure.aggregation == "ckks":
        return Algorithm("fedavg", sampler=sampler, combiner=EncryptedAveraging(config.server, config.secure, dp))
    secure = SecureUploads(config.secure, config.server.weighting) if config.secure.masking else None
    return Algorithm("fedavg", sampler=sampler, combiner=ServerAveraging(config.server, dp, secure))
