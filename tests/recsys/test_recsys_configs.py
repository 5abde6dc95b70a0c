"""Every shipped `configs/recsys-*.yaml` is a valid, strict RecsysConfig (unknown keys would be errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.config import build, load_yaml
from fedge.recsys.config import RecsysConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("recsys-*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recsys_config_builds(path: Path) -> None:
    cfg = build(RecsysConfig, load_yaml(path))
    cfg.validate()
    assert path.stem == f"recsys-{cfg.algorithm}" or path.stem.startswith(f"recsys-{cfg.algorithm}-")  # -dp


def test_there_are_recsys_configs() -> None:
    assert len(CONFIGS) >= 4
