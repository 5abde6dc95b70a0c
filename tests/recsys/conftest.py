"""Fixtures for the recsys tests: small hand-built MovieLens-like data (nothing is downloaded) and a loopback
transport that records every message that crossed it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.config import build
from fedge.core.codec import Frame, unframe
from fedge.data.movielens import Ratings
from fedge.messaging import Ledger, LoopbackTransport
from fedge.recsys.config import RecsysConfig


def make_ratings(num_users: int = 12, num_items: int = 40, seed: int = 0) -> Ratings:
    """Each user rates 6-10 distinct items, ratings 1-5, increasing timestamps."""
    rng = np.random.default_rng(seed)
    users, items, ratings, stamps = [], [], [], []
    for u in range(num_users):
        chosen = rng.choice(num_items, size=int(rng.integers(6, 11)), replace=False)
        for t, i in enumerate(chosen):
            users.append(u)
            items.append(int(i))
            ratings.append(float(rng.integers(1, 6)))
            stamps.append(1000 * u + t)
    return Ratings("tiny", torch.tensor(users), torch.tensor(items), torch.tensor(ratings),
                   torch.tensor(stamps), np.arange(100, 100 + num_users), np.arange(500, 500 + num_items))


def _tiny_config(tmp_path: Path, **overrides: object) -> RecsysConfig:
    mapping: dict = {"out_dir": str(tmp_path / "run"), "progress": False, "data": {"eval_negatives": 20},
                     "model": {"dim": 4, "layers": [8, 4]}, "train": {"rounds": 2, "local_batches": 2},
                     "decentralized": {"num_edges": 3, "neighbours": 1}}
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            mapping.setdefault(section, {})[name] = value
        else:
            mapping[section] = value
    return build(RecsysConfig, mapping)


@pytest.fixture
def tiny() -> Ratings:
    return make_ratings()


@pytest.fixture
def small() -> Ratings:
    """40 users, 80 items: enough held-out users that a changed test set changes the test metrics."""
    return make_ratings(num_users=40, num_items=80, seed=3)


@pytest.fixture
def tiny_config() -> Callable[..., RecsysConfig]:
    """Config builder: tiny_config(tmp_path, section__key=value, ...)."""
    return _tiny_config


class Recording(LoopbackTransport):
    """A loopback transport that keeps every message that crossed it (frame + body, as bytes)."""

    def __init__(self, ledger: Ledger, addresses: torch.Tensor | None = None) -> None:
        super().__init__(ledger, addresses)
        self.messages: list[bytes] = []

    def carry(self, message: bytes) -> bytes:
        self.messages.append(bytes(message))
        return message

    def frames(self) -> list[tuple[Frame, bytes]]:
        """(frame, body) of every message, in the order they crossed."""
        return [unframe(m) for m in self.messages]


class Recorder:
    """A transport factory for `fedge.recsys.runner.run` that keeps the recording transport it built."""

    transport: Recording

    def __call__(self, ledger: Ledger) -> Recording:
        self.transport = Recording(ledger)
        return self.transport


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ratings_dir(tmp_path: Path, tiny: Ratings) -> Path:
    """The tiny ratings as an ml-latest-small ratings.csv (user and item ids shifted, as real files number them)."""
    folder = tmp_path / "ml"
    folder.mkdir()
    rows = ["userId,movieId,rating,timestamp"]
    for u, i, r, t in zip(tiny.user.tolist(), tiny.item.tolist(), tiny.rating.tolist(), tiny.timestamp.tolist(),
                          strict=True):
        rows.append(f"{u + 1},{i + 100},{r:g},{t}")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder
