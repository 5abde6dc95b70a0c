"""Configuration of `fedge recsys` (strict dataclasses; see `fedge.config`).

Every number declares its documented range with its type (see `fedge.config.Range`); `fedge.config.build` rejects
non-finite and out-of-range values, so the `validate` methods keep only checks that involve several fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fedge.config import (
    BelowOne,
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    Share,
    Similarity,
    check,
)
from fedge.privacy.config import PrivacyConfig
from fedge.secure.config import SecureConfig

CLIENT_SERVER = ("fedmf", "fedncf")  # the recommenders user-level DP supports: clients upload to one server


@dataclass
class DataConfig:
    dataset: Literal["ml-latest-small", "ml-100k", "ml-1m"] = "ml-latest-small"
    data_dir: Path | None = None
    download: bool = False
    protocol: Literal["implicit", "explicit"] = "implicit"
    num_negatives: NonNegativeInt = 4  # training negatives per positive (NCF)
    eval_negatives: PositiveInt = 99  # sampled never-seen items ranked against the held-out one
    # explicit protocol: share of each user's ratings held out for test (as many again for validation)
    test_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.2


@dataclass
class ModelConfig:
    dim: PositiveInt = 32  # latent factors (MF) / per-tower embedding size (NeuMF)
    layers: list[PositiveInt] = field(default_factory=lambda: [32, 16, 8])  # NeuMF MLP tower widths


@dataclass
class TrainConfig:
    rounds: PositiveInt = 20  # most communication rounds (epochs for centralized); early stopping may end sooner
    # early stopping (fedge.recsys.selection): end the run once `patience` rounds have passed since the best
    # validation HR@10 (RMSE); 0 = run every round. Either way the reported model is the best-validation round's.
    patience: NonNegativeInt = 0
    client_fraction: Share = 1.0  # share of users taking part in a round
    local_epochs: PositiveInt = 1
    # epochs fitting only the private user row to the downloaded model, before local_epochs
    user_epochs: NonNegativeInt = 0
    # before scoring, each device refits a copy of its user row to the final downloaded model (fedmf/fedncf)
    eval_user_epochs: NonNegativeInt = 0
    eval_user_lr: NonNegativeFloat = 0.0  # Adam step of that refit; 0 = lr
    local_batches: PositiveInt = 4  # local minibatches per epoch (each client's data split this many ways)
    lr: PositiveFloat = 0.01  # local learning rate
    # local learning rate of the dense shared tensors (NeuMF's MLP and output); 0 = lr
    dense_lr: NonNegativeFloat = 0.0
    local_optimizer: Literal["adam", "sgd"] = "adam"
    # Adam's epsilon, local and centralized (larger: small gradients take small steps)
    adam_eps: PositiveFloat = 1e-8
    l2: NonNegativeFloat = 0.0
    server_lr: PositiveFloat = 1.0  # step applied to the averaged item/dense deltas
    # FedOpt (Reddi et al. 2021) on the averaged deltas: sgd (+momentum = FedAvgM), adagrad, adam, yogi
    server_optimizer: Literal["sgd", "adagrad", "adam", "yogi"] = "sgd"
    server_momentum: BelowOne = 0.0  # sgd only
    server_beta1: BelowOne = 0.9
    server_beta2: BelowOne = 0.99
    server_eps: PositiveFloat = 1e-3  # adaptivity tau of FedAdagrad/FedAdam/FedYogi
    upload: Literal["interacted", "full"] = "interacted"
    value_dtype: Literal["fp32", "fp16"] = "fp32"
    central_batch_size: PositiveInt = 1024  # centralized reference only


@dataclass
class MetaConfig:
    """fedmeta: first-order MAML / Per-FedAvg (Chen et al. 2018; Fallah et al. 2020)."""

    model: Literal["mf", "neumf"] = "mf"
    inner_lr: PositiveFloat = 0.05  # SGD step of the per-user adaptation
    inner_steps: PositiveInt = 1  # adaptation steps inside each meta-step
    eval_steps: NonNegativeInt = 5  # adaptation steps on the user's own training data before evaluation


@dataclass
class DecentralizedConfig:
    """dfedmf / dfedncf: users train with their edge server; edge servers exchange updates with neighbours."""

    num_edges: Annotated[int, Range(2)] = 8
    neighbours: PositiveInt = 2  # k_max of the similarity-based selection; < num_edges
    # cosine-similarity threshold δ (neighbours below it only to reach k_min = 1)
    delta: Similarity = 0.5
    selection: Literal["similarity", "random"] = "similarity"

    def validate(self) -> None:
        check(self.neighbours < self.num_edges,
              f"neighbours: must be less than num_edges ({self.num_edges}), got {self.neighbours}")


@dataclass
class RuntimeConfig:
    """How messages travel: `direct` hands tensors over (zero-copy, the fast path); `loopback` encodes every message
    to bytes and the receiver decodes them (same results, tested; slower)."""

    transport: Literal["direct", "loopback"] = "direct"


@dataclass
class RecsysConfig:
    algorithm: str = "fedmf"
    seed: Seed = 0
    out_dir: Path = Path("runs/recsys")
    eval_every: PositiveInt = 1
    top_k: PositiveInt = 10  # length of each user's exported recommendation list
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    decentralized: DecentralizedConfig = field(default_factory=DecentralizedConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    # user-level DP-FedAvg for fedmf/fedncf (McMahan et al. 2018; fedge.recsys.dp, docs/recsys.md)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    # SecAgg / SecAgg+ of fedmf/fedncf's whole-catalogue uploads (fedge.recsys.secure, docs/recsys.md)
    secure: SecureConfig = field(default_factory=SecureConfig)

    def validate(self) -> None:
        """Numbers are range-checked by `fedge.config.build`, and the algorithm's name where a run starts
        (`fedge.recsys.runner.run`, the command), against the algorithm registry: importing it here would make
        config and algorithms import each other. What is checked here is which privacy and secure-aggregation
        settings fedge recsys supports (`privacy_problem`, `secure_problem`); the threshold and the headroom need
        the number of users and are checked when the run has loaded its data (`fedge.recsys.secure`)."""
        problem = privacy_problem(self) or secure_problem(self)
        if problem:
            raise ConfigError(problem)


def privacy_problem(cfg: RecsysConfig) -> str | None:
    """Why `cfg.privacy` cannot run in fedge recsys, in one line, or None.

    Only user-level DP (`mechanism: user`) exists here, for the client-server recommenders: record-level DP-SGD and
    the peer mechanism belong to `fedge run`. Under it, devices take part by Poisson sampling at
    `privacy.sample_rate` (so the fixed-size `train.client_fraction` must stay 1), and uploads travel in fp32 (an
    fp16 payload is rounded after clipping and could exceed C by the rounding)."""
    privacy = cfg.privacy
    if privacy.mechanism in ("dp-sgd", "peer"):
        return (f"privacy.mechanism: {privacy.mechanism} is not available in fedge recsys (dp-sgd and peer are "
                "fedge run's); use user (user-level DP-FedAvg for fedmf, fedncf)")
    if privacy.mechanism != "user":
        return None
    if cfg.algorithm not in CLIENT_SERVER:
        return (f"privacy.mechanism: user needs a client-server recommender ({', '.join(CLIENT_SERVER)}), "
                f"not {cfg.algorithm}")
    if cfg.train.client_fraction != 1.0:
        return (f"train.client_fraction: {cfg.train.client_fraction} is fixed-size sampling; under privacy.mechanism "
                "user devices take part by Poisson sampling at privacy.sample_rate (leave client_fraction at 1)")
    if cfg.train.value_dtype != "fp32":
        return (f"train.value_dtype: {cfg.train.value_dtype} rounds clipped uploads past privacy.max_grad_norm; "
                "user-level DP needs fp32")
    return None


def secure_problem(cfg: RecsysConfig) -> str | None:
    """Why `cfg.secure` cannot run in fedge recsys, in one line, or None.

    SecAgg / SecAgg+ are wired for the client-server recommenders, over whole-catalogue downloads and uploads
    (`train.upload: full`): in `interacted` mode a client's item requests tell the server which items it touches,
    which the masked whole-catalogue upload is there to hide. CKKS and Paillier are not wired here."""
    secure = cfg.secure
    if secure.aggregation == "none":
        return None
    if not secure.masking:
        return (f"secure.aggregation: {secure.aggregation} is not wired for fedge recsys (secagg and secagg+ are, for "
                f"{', '.join(CLIENT_SERVER)}; Paillier on fedmf deltas: benchmarks/paillier_fedmf.py)")
    if cfg.algorithm not in CLIENT_SERVER:
        return (f"secure.aggregation: {secure.aggregation} needs a client-server recommender "
                f"({', '.join(CLIENT_SERVER)}) whose server sums the uploads, not {cfg.algorithm}")
    if cfg.train.upload != "full":
        return (f"train.upload: {cfg.train.upload} sends item requests that tell the server which items a client "
                f"touches; secure.aggregation: {secure.aggregation} needs train.upload: full (--upload full)")
    if cfg.privacy.mechanism == "user" and cfg.privacy.adaptive_clipping:
        return ("privacy.adaptive_clipping: not with secure aggregation (the count of clipped updates would need "
                "its own distributed noise)")
    return None


__all__ = ["CLIENT_SERVER", "DataConfig", "DecentralizedConfig", "MetaConfig", "ModelConfig", "RecsysConfig",
           "RuntimeConfig", "TrainConfig", "privacy_problem", "secure_problem"]
