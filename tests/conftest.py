"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def movielens_dir() -> Path:
    folder = SHARED_DATA / "movielens" / "ml-latest-small"
    if not (folder / "ratings.csv").exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {folder}")
    return folder
