"""Each recommendation algorithm's own defaults: its tuned settings, so that `fedge recsys --algorithm X` with no
config runs X as documented (docs/recsys.md) instead of one generic `TrainConfig` that suits none of them.

A config is resolved in layers, later ones winning: the dataclass defaults (`fedge.recsys.config`), then
`TUNED[algorithm]`, then the YAML file, then the command-line flags and `--set`. The shipped configs/recsys-*.yaml
therefore name only what differs from their algorithm's defaults. `recsys_config(mapping)` is that resolution;
`fedge.config.build(RecsysConfig, mapping)` alone gives the generic dataclass defaults (what the tests use).

Every value here was tuned on ml-latest-small under the implicit protocol; the round counts are caps, the number
of rounds actually kept is chosen by early stopping on the validation item (`train.patience`,
`fedge.recsys.selection`). dfedmf and fedmeta carry their shipped configs' values (not tuned beyond a smoke run);
dfedncf has none beyond the generic ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedge.config import build, merge_mappings
from fedge.recsys.config import RecsysConfig

_FEDERATED = {"lr": 0.1, "adam_eps": 1e-3, "l2": 0.003, "local_epochs": 4, "local_batches": 4}

TUNED: dict[str, dict[str, Any]] = {
    "fedmf": {
        "eval_every": 1,
        "model": {"dim": 32},
        "train": {**_FEDERATED, "rounds": 60, "patience": 10},
    },
    "fedncf": {
        "eval_every": 2,  # every evaluation refits each user row (eval_user_epochs): about half a round's time
        "model": {"dim": 16, "layers": [32, 16, 8]},
        "train": {**_FEDERATED, "rounds": 50, "patience": 10, "user_epochs": 1, "eval_user_epochs": 2,
                  "eval_user_lr": 0.03},
    },
    "central-mf": {
        "eval_every": 1,
        "model": {"dim": 32},
        "train": {"rounds": 60, "patience": 10, "lr": 0.001, "l2": 0.001, "central_batch_size": 1024},
    },
    "central-neumf": {
        "eval_every": 1,
        "model": {"dim": 16, "layers": [32, 16, 8]},
        "train": {"rounds": 30, "patience": 8, "lr": 0.003, "central_batch_size": 1024},
    },
    "dfedmf": {"eval_every": 5, "model": {"dim": 32}, "train": {"rounds": 20, "local_epochs": 2, "lr": 0.03}},
    "fedmeta": {"eval_every": 5, "model": {"dim": 32}, "train": {"rounds": 20, "local_batches": 4, "lr": 0.03}},
}


def with_tuned(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """`mapping` (YAML and flags, already merged) on top of its algorithm's tuned defaults (default: fedmf's)."""
    algorithm = mapping.get("algorithm", RecsysConfig.algorithm)
    tuned = TUNED.get(algorithm, {}) if isinstance(algorithm, str) else {}
    return merge_mappings(tuned, mapping)


def recsys_config(mapping: Mapping[str, Any]) -> RecsysConfig:
    """The strict config of `mapping` with the algorithm's tuned defaults underneath (see the module docstring)."""
    return build(RecsysConfig, with_tuned(mapping))


__all__ = ["TUNED", "recsys_config", "with_tuned"]
