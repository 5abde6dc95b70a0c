"""`fedge reproduce` computes cells on one intra-op thread and leaves the caller's thread count as it found it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fedge.reproduce import pool


def test_single_worker_grid_restores_the_thread_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[int] = []

    def fake_cell(cell: Any, folder: str, tick: Any) -> float:
        seen.append(torch.get_num_threads())
        tick()
        return 0.0

    monkeypatch.setattr(pool, "run_cell", fake_cell)
    cells = [SimpleNamespace(key=f"c{i}", devices=4, seed=i, delta=0.0, algorithm="dfl", config={"rounds": 1})
             for i in range(2)]
    cache = SimpleNamespace(has=lambda cell: False, folder=tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stats = pool.run_grid(cells, cache, workers=1, progress=False)  # type: ignore[arg-type]
        assert seen == [1, 1] and stats.computed == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
