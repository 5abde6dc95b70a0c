"""The cost model on hand-made traces, and the statistics of soft-hit acceptance."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.caching.config import SoftHitConfig
from fedge.caching.policies import LRU, StaticTop
from fedge.caching.similarity import SoftHitTable, acceptance_probability
from fedge.caching.simulator import simulate

from .helpers import MODEL, make_trace


def test_hand_computed_cost_with_soft_hit() -> None:
    # capacity 1, LRU, item 1 may substitute for 0 and vice versa (s = 0.9, always accepted).
    table = SoftHitTable(items=[[1], [0], []], sims=[[0.9], [0.9], []], probs=[[1.0], [1.0], []])
    trace = make_trace([0, 0, 1, 2, 1])
    (ep,) = simulate(trace, [LRU(1)], table, MODEL, np.zeros(5), 5, False, True)
    # t0 cloud miss (cache {0}); t1 direct; t2 soft via 0 (s=.9); t3 cloud, evicts 0; t4 cloud (2 is no substitute)
    cloud, direct, soft = 0.1 * 10 + 3, 0.1 * 1, 2 * (1 - 0.9) + 0.1 * 1
    assert ep["cost"] == pytest.approx((3 * cloud + direct + soft) / 5)
    assert ep["delay_ms"] == pytest.approx((10 + 1 + 1 + 10 + 10) / 5)
    assert (ep["direct_hit_ratio"], ep["soft_hit_ratio"], ep["cloud_ratio"]) == (0.2, 0.2, 0.6)
    assert ep["backhaul_mb"] == pytest.approx(3 * 2.0)
    (off,) = simulate(trace, [LRU(1)], table, MODEL, np.zeros(5), 5, False, False)
    assert off["cost"] > ep["cost"]


def test_hand_computed_cost_with_neighbour_cooperation() -> None:
    trace = make_trace([0, 0, 1, 0], [0, 1, 1, 1], num_items=2)
    (ep,) = simulate(trace, [LRU(1), LRU(1)], SoftHitTable.empty(2), MODEL, np.zeros(4), 4, True, True)
    # t0 e0 cloud; t1 e1 from neighbour e0; t2 e1 cloud (evicts 0); t3 e1 from neighbour e0 again
    assert ep["cost"] == pytest.approx((2 * (0.1 * 10 + 3) + 2 * (0.1 * 5 + 3)) / 4)
    assert ep["neighbour_ratio"] == 0.5 and ep["backhaul_mb"] == pytest.approx(4.0)
    (alone,) = simulate(trace, [LRU(1), LRU(1)], SoftHitTable.empty(2), MODEL, np.zeros(4), 4, False, True)
    assert alone["cloud_ratio"] == 1.0


def test_acceptance_functions() -> None:
    s = np.array([0.2, 0.5, 0.75, 1.0])
    lin = acceptance_probability(s, SoftHitConfig(function="linear", floor=0.5, max_prob=0.8))
    assert lin == pytest.approx([0.0, 0.0, 0.4, 0.8])
    pw = acceptance_probability(s, SoftHitConfig(function="power", floor=0.3, exponent=2, max_prob=1.0))
    assert pw == pytest.approx([0.0, 0.25, 0.5625, 1.0])
    step = acceptance_probability(s, SoftHitConfig(function="step", floor=0.6, max_prob=0.5))
    assert step == pytest.approx([0, 0, 0.5, 0.5])


@pytest.mark.parametrize("function", ["linear", "power", "sigmoid"])
@pytest.mark.parametrize("similarity", [0.3, 0.7, 0.95])
def test_soft_hit_acceptance_follows_function(function: str, similarity: float) -> None:
    """Item 0 is always cached; item 1 (cosine `similarity` to item 0) is requested n times."""
    cfg = SoftHitConfig(function=function, floor=0.5, max_prob=0.9, neighbours=1)
    theta = np.arccos(similarity)
    emb = np.array([[1.0, 0.0], [np.cos(theta), np.sin(theta)]], dtype=np.float32)
    table = SoftHitTable.build(emb, cfg)
    n = 20000
    trace = make_trace([1] * n, num_items=2)
    u = np.random.default_rng(3).random(n)
    (ep,) = simulate(trace, [StaticTop(1, np.array([0]))], table, MODEL, u, n, False, True)
    p = float(acceptance_probability(similarity, cfg))
    assert abs(ep["soft_hit_ratio"] - p) <= 4 * np.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
    if similarity < cfg.floor:
        assert ep["soft_hit_ratio"] == 0.0
