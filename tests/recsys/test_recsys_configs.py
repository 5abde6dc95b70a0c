"""Every shipped `configs/recsys-*.yaml` is a valid, strict RecsysConfig (unknown keys would be errors), and each
algorithm's defaults are its tuned settings (`fedge.recsys.defaults`), so that a config names only what differs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from fedge.commands import recsys as command
from fedge.config import ConfigError, load_yaml, to_dict
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.defaults import TUNED, recsys_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("recsys-*.yaml"))


def _leaves(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recsys_config_builds_and_names_only_what_differs(path: Path) -> None:
    mapping = load_yaml(path)
    cfg = recsys_config(mapping)
    cfg.validate()
    assert path.stem == f"recsys-{cfg.algorithm}" or path.stem.startswith(f"recsys-{cfg.algorithm}-")  # -dp
    defaults = _leaves(to_dict(recsys_config({"algorithm": cfg.algorithm})))
    named = _leaves(mapping)
    same = [key for key, value in named.items() if key != "algorithm" and defaults[key] == value]
    assert not same, f"{path.name} repeats its algorithm's defaults: {same}"
    resolved = _leaves(to_dict(cfg))
    assert {k: v for k, v in resolved.items() if k not in named} == \
        {k: v for k, v in defaults.items() if k not in named}  # everything else is the algorithm's default


def test_tuned_defaults_name_known_algorithms_and_keys() -> None:
    assert set(TUNED) <= set(ALGORITHMS)
    for algorithm in TUNED:
        recsys_config({"algorithm": algorithm})  # strict: an unknown key in TUNED would raise


def test_the_command_without_a_config_runs_the_tuned_settings() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    fedmf = command.resolve(parser.parse_args(["--algorithm", "fedmf", "--dataset", "ml-latest-small"]))
    assert (fedmf.train.lr, fedmf.train.adam_eps, fedmf.train.l2, fedmf.train.local_epochs) == (0.1, 1e-3, 0.003, 4)
    assert fedmf.train.patience > 0 and fedmf.data.dataset == "ml-latest-small"
    central = command.resolve(parser.parse_args(["--algorithm", "central-mf", "--set", "train.l2=0.002"]))
    assert (central.train.lr, central.train.l2, central.train.adam_eps) == (0.001, 0.002, 1e-8)  # --set wins
    fedncf = command.resolve(parser.parse_args(["--algorithm", "fedncf"]))
    assert (fedncf.model.dim, fedncf.train.eval_user_epochs, fedncf.train.user_epochs) == (16, 2, 1)
    with pytest.raises(ConfigError, match="train.patience"):
        command.resolve(parser.parse_args(["--algorithm", "fedmf", "--set", "train.patience=-1"]))


def test_there_are_recsys_configs() -> None:
    assert len(CONFIGS) >= 4
