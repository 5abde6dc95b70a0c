"""Eviction rules of LRU, LFU, FIFO on known sequences, and Belady's optimality against brute force."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from fedge.caching.policies import FIFO, LFU, LRU, Belady, RandomEviction, SimilarityLFU, next_use
from fedge.caching.similarity import SoftHitTable
from fedge.caching.simulator import make_policies, simulate

from .helpers import MODEL, make_trace, replay


def test_lru_evicts_least_recently_used() -> None:
    p = LRU(2)
    assert replay(p, [1, 2, 1, 3]) == [False, False, True, False]
    assert set(p.cached) == {1, 3}  # 2 was least recently used
    replay(p, [2])
    assert set(p.cached) == {3, 2}  # then 1


def test_fifo_evicts_oldest_admission_regardless_of_hits() -> None:
    p = FIFO(2)
    replay(p, [1, 2, 1, 3])
    assert set(p.cached) == {2, 3}  # 1 was admitted first even though it was just hit
    replay(p, [4])
    assert set(p.cached) == {3, 4}


def test_lfu_evicts_least_frequent_with_lru_tie_break() -> None:
    p = LFU(2)
    replay(p, [1, 2, 1, 3])
    assert set(p.cached) == {1, 3}  # 2 had count 1 (older than 3's admission)
    replay(p, [3, 4])  # counts 1:2, 3:2 -> tie, 1 used less recently
    assert set(p.cached) == {3, 4}
    p = LFU(3)
    replay(p, [5, 5, 5, 6, 6, 7, 8])
    assert set(p.cached) == {5, 6, 8}  # 7 (count 1) evicted, not 5 or 6


def test_random_eviction_is_seeded_and_keeps_capacity() -> None:
    runs = []
    for _ in range(2):
        p = RandomEviction(3, np.random.default_rng(4))
        replay(p, list(range(20)))
        runs.append(sorted(p.cached))
        assert len(p.cached) == 3 and len(p.slots) == 3
    assert runs[0] == runs[1]


def test_similarity_lfu_admission_control() -> None:
    p = SimilarityLFU(1)
    replay(p, [1, 1, 1, 2])
    assert set(p.cached) == {1}  # 2 (score 1) does not displace 1 (score 3)
    p.soft(1, 0.5, 4)
    replay(p, [2, 2, 2, 2])
    assert set(p.cached) == {2}  # score 5 > 3.5


def test_next_use() -> None:
    items = np.array([1, 2, 1, 1, 2])
    edges = np.array([0, 0, 1, 0, 0])
    assert next_use(items, edges).tolist() == [3, 4, 5, 5, 5]


def brute_force_hits(requests: list[int], capacity: int) -> int:
    @cache
    def best(t: int, cache: frozenset) -> int:
        if t == len(requests):
            return 0
        k = requests[t]
        if k in cache:
            return 1 + best(t + 1, cache)
        options = [best(t + 1, cache)]  # bypass
        if len(cache) < capacity:
            options.append(best(t + 1, cache | {k}))
        else:
            options += [best(t + 1, (cache - {v}) | {k}) for v in cache]
        return max(options)

    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(12))
def test_belady_direct_hits_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, cap = int(rng.integers(6, 12)), int(rng.integers(3, 6)), int(rng.integers(1, 4))
    requests = rng.integers(0, m, size=n).tolist()
    trace = make_trace(requests, num_items=m)
    u = np.zeros(n)
    results = {}
    for name in ("belady", "lru", "lfu", "fifo"):
        eps = simulate(trace, make_policies(name, cap, trace, 1, 0), SoftHitTable.empty(m), MODEL, u, n, False, False)
        results[name] = round(eps[0]["direct_hit_ratio"] * n)
    assert results["belady"] == brute_force_hits(requests, cap)
    assert all(results["belady"] >= results[name] for name in ("lru", "lfu", "fifo"))


def test_belady_direct_hits_per_edge() -> None:
    trace = make_trace([0, 1, 0, 2, 1, 0, 3, 0], [0, 1, 0, 1, 1, 0, 0, 0], num_items=4)
    eps = simulate(trace, [Belady(1, next_use(trace.items, trace.edges)) for _ in range(2)], SoftHitTable.empty(4),
                   MODEL, np.zeros(8), 8, False, False)
    assert round(eps[0]["direct_hit_ratio"] * 8) == brute_force_hits([0, 0, 0, 3, 0], 1) + brute_force_hits(
        [1, 2, 1], 1)
