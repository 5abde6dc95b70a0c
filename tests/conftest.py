"""Shared test fixtures."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedge.data.idx import write_idx

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def write_ratings_csv(folder: Path, users: int, items: int, per_user: tuple[int, int], seed: int = 0) -> Path:
    """`folder`/ratings.csv in ml-latest-small's format: each of `users` users rates a random number in `per_user`
    of `items` movies (ids from 100), ratings 1-5, increasing timestamps. Returns `folder`."""
    rng = random.Random(seed)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(users):
        for t, item in enumerate(rng.sample(range(items), rng.randint(*per_user))):
            rows.append(f"{user + 1},{item + 100},{rng.randint(1, 5)},{1000 * user + t}")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def ratings_csv() -> Callable[..., Path]:
    """`write_ratings_csv`, for tests in any folder."""
    return write_ratings_csv


@pytest.fixture
def movielens_dir() -> Path:
    folder = SHARED_DATA / "movielens" / "ml-latest-small"
    if not (folder / "ratings.csv").exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {folder}")
    return folder


@pytest.fixture
def fashion_mnist_dir(tmp_path: Path) -> Path:
    """A folder holding the four standard Fashion-MNIST IDX files (gzip'd), tiny but learnable like the real data:
    200 training and 60 test images, a class-dependent bright band plus noise."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 60)):
        labels = np.arange(n) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for k, label in enumerate(labels):
            images[k, 2 * label: 2 * label + 4, :] = 200
            images[k] += rng.integers(0, 40, size=(28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8), compress=True)
    return folder
