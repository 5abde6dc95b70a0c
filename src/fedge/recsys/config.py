"""Configuration of `fedge recsys` (strict dataclasses; see `fedge.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedge.config import check


@dataclass
class DataConfig:
    dataset: Literal["ml-latest-small", "ml-100k", "ml-1m"] = "ml-latest-small"
    data_dir: Path | None = None
    download: bool = False
    protocol: Literal["implicit", "explicit"] = "implicit"
    num_negatives: int = 4  # training negatives per positive (NCF)
    eval_negatives: int = 99  # sampled never-seen items ranked against the held-out one
    test_fraction: float = 0.2  # explicit protocol: share of each user's ratings held out

    def validate(self) -> None:
        check(self.num_negatives >= 0, f"num_negatives: must be >= 0, got {self.num_negatives}")
        check(self.eval_negatives >= 1, f"eval_negatives: must be >= 1, got {self.eval_negatives}")
        check(0 < self.test_fraction < 1, f"test_fraction: must be in (0, 1), got {self.test_fraction}")


@dataclass
class ModelConfig:
    dim: int = 32  # latent factors (MF) / per-tower embedding size (NeuMF)
    layers: list[int] = field(default_factory=lambda: [32, 16, 8])  # NeuMF MLP tower

    def validate(self) -> None:
        check(self.dim >= 1, f"dim: must be >= 1, got {self.dim}")
        check(all(w >= 1 for w in self.layers), f"layers: widths must be >= 1, got {self.layers}")


@dataclass
class TrainConfig:
    rounds: int = 20  # communication rounds (epochs for centralized)
    client_fraction: float = 1.0  # share of users taking part in a round
    local_epochs: int = 1
    user_epochs: int = 0  # epochs fitting only the private user row to the downloaded model, before local_epochs
    # before scoring, each device refits a copy of its user row to the final downloaded model (fedmf/fedncf)
    eval_user_epochs: int = 0
    eval_user_lr: float = 0.0  # Adam step of that refit; 0 = lr
    local_batches: int = 4  # local minibatches per epoch (each client's data split this many ways)
    lr: float = 0.01  # local learning rate
    dense_lr: float = 0.0  # local learning rate of the dense shared tensors (NeuMF's MLP and output); 0 = lr
    local_optimizer: Literal["adam", "sgd"] = "adam"
    adam_eps: float = 1e-8  # Adam's epsilon, local and centralized (larger: small gradients take small steps)
    l2: float = 0.0
    server_lr: float = 1.0  # step applied to the averaged item/dense deltas
    # FedOpt (Reddi et al. 2021) on the averaged deltas: sgd (+momentum = FedAvgM), adagrad, adam, yogi
    server_optimizer: Literal["sgd", "adagrad", "adam", "yogi"] = "sgd"
    server_momentum: float = 0.0  # sgd only
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_eps: float = 1e-3  # adaptivity tau of FedAdagrad/FedAdam/FedYogi
    upload: Literal["interacted", "full"] = "interacted"
    value_dtype: Literal["fp32", "fp16"] = "fp32"
    central_batch_size: int = 1024  # centralized reference only

    def validate(self) -> None:
        check(self.rounds >= 1, f"rounds: must be >= 1, got {self.rounds}")
        check(0 < self.client_fraction <= 1, f"client_fraction: must be in (0, 1], got {self.client_fraction}")
        check(self.local_epochs >= 1, f"local_epochs: must be >= 1, got {self.local_epochs}")
        check(self.user_epochs >= 0, f"user_epochs: must be >= 0, got {self.user_epochs}")
        check(self.eval_user_epochs >= 0, f"eval_user_epochs: must be >= 0, got {self.eval_user_epochs}")
        check(self.eval_user_lr >= 0, f"eval_user_lr: must be >= 0, got {self.eval_user_lr}")
        check(self.local_batches >= 1, f"local_batches: must be >= 1, got {self.local_batches}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(self.dense_lr >= 0, f"dense_lr: must be >= 0, got {self.dense_lr}")
        check(self.adam_eps > 0, f"adam_eps: must be > 0, got {self.adam_eps}")
        check(self.l2 >= 0, f"l2: must be >= 0, got {self.l2}")
        check(self.server_lr > 0, f"server_lr: must be > 0, got {self.server_lr}")
        check(0 <= self.server_momentum < 1, f"server_momentum: must be in [0, 1), got {self.server_momentum}")
        check(0 <= self.server_beta1 < 1, f"server_beta1: must be in [0, 1), got {self.server_beta1}")
        check(0 <= self.server_beta2 < 1, f"server_beta2: must be in [0, 1), got {self.server_beta2}")
        check(self.server_eps > 0, f"server_eps: must be > 0, got {self.server_eps}")
        check(self.central_batch_size >= 1, f"central_batch_size: must be >= 1, got {self.central_batch_size}")


@dataclass
class MetaConfig:
    """fedmeta: first-order MAML / Per-FedAvg (Chen et al. 2018; Fallah et al. 2020)."""

    model: Literal["mf", "neumf"] = "mf"
    inner_lr: float = 0.05  # SGD step of the per-user adaptation
    inner_steps: int = 1  # adaptation steps inside each meta-step
    eval_steps: int = 5  # adaptation steps on the user's own training data before evaluation

    def validate(self) -> None:
        check(self.inner_lr > 0, f"inner_lr: must be > 0, got {self.inner_lr}")
        check(self.inner_steps >= 1, f"inner_steps: must be >= 1, got {self.inner_steps}")
        check(self.eval_steps >= 0, f"eval_steps: must be >= 0, got {self.eval_steps}")


@dataclass
class DecentralizedConfig:
    """dfedmf / dfedncf: users train with their edge server; edge servers exchange updates with neighbours."""

    num_edges: int = 8
    neighbours: int = 2  # k_max of the similarity-based selection
    delta: float = 0.5  # similarity threshold δ (neighbours below it only to reach k_min = 1)
    selection: Literal["similarity", "random"] = "similarity"

    def validate(self) -> None:
        check(self.num_edges >= 2, f"num_edges: must be >= 2, got {self.num_edges}")
        check(1 <= self.neighbours < self.num_edges,
              f"neighbours: must be in [1, num_edges), got {self.neighbours}")


@dataclass
class RuntimeConfig:
    """How messages travel: `direct` hands tensors over (zero-copy, the fast path); `loopback` encodes every message
    to bytes and the receiver decodes them (same results, tested; slower)."""

    transport: Literal["direct", "loopback"] = "direct"


@dataclass
class RecsysConfig:
    algorithm: str = "fedmf"
    seed: int = 0
    out_dir: Path = Path("runs/recsys")
    eval_every: int = 1
    top_k: int = 10  # length of each user's exported recommendation list
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    decentralized: DecentralizedConfig = field(default_factory=DecentralizedConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        # The algorithm's name is checked where a run starts (`fedge.recsys.runner.run`, the command), against the
        # algorithm registry: importing it here would make config and algorithms import each other.
        check(self.eval_every >= 1, f"eval_every: must be >= 1, got {self.eval_every}")
        check(self.top_k >= 1, f"top_k: must be >= 1, got {self.top_k}")


__all__ = ["DataConfig", "DecentralizedConfig", "MetaConfig", "ModelConfig", "RecsysConfig", "RuntimeConfig",
           "TrainConfig"]
