"""Heuristic cache-replacement policies for one edge server, written for speed (O(1) or O(log C) per request).

Every policy exposes `cached` (a dict whose keys are the cached items, for O(1) membership) and three callbacks the
simulator invokes: `hit(k, t)` on a direct hit, `soft(j, s, t)` when cached item j served a soft hit with similarity
s, and `miss(k, t)` after item k was fetched from a neighbour or the cloud (the policy may admit k, evicting one item,
or bypass it). `t` is the request's index in the global trace. Soft hits never insert: the requested item was not
fetched, so there is nothing to cache.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

import numpy as np


class LRU:
    """Least recently used: evict the item whose last direct or soft use is oldest."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.cached = capacity, OrderedDict()

    def hit(self, k: int, t: int) -> None:
        self.cached.move_to_end(k)

    def soft(self, j: int, s: float, t: int) -> None:
        self.cached.move_to_end(j)

    def miss(self, k: int, t: int) -> None:
        if len(self.cached) >= self.capacity:
            self.cached.popitem(last=False)
        self.cached[k] = None


class FIFO:
    """First in, first out: evict the item admitted longest ago; hits change nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.cached = capacity, OrderedDict()

    def hit(self, k: int, t: int) -> None:
        pass

    def soft(self, j: int, s: float, t: int) -> None:
        pass

    def miss(self, k: int, t: int) -> None:
        if len(self.cached) >= self.capacity:
            self.cached.popitem(last=False)
        self.cached[k] = None


class LFU:
    """Least frequently used, O(1) (Shah, Mitra & Matani 2010): evict the item with the fewest uses (direct or soft)
    since it was admitted; ties go to the least recently used among them. Counts restart at 1 on admission."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cached: dict[int, int] = {}  # item -> use count
        self.buckets: dict[int, OrderedDict] = {}
        self.min_count = 0

    def _bump(self, k: int) -> None:
        f = self.cached[k]
        bucket = self.buckets[f]
        del bucket[k]
        if not bucket:
            del self.buckets[f]
            if self.min_count == f:
                self.min_count = f + 1
        self.cached[k] = f + 1
        nxt = self.buckets.get(f + 1)
        if nxt is None:
            nxt = self.buckets[f + 1] = OrderedDict()
        nxt[k] = None

    def hit(self, k: int, t: int) -> None:
        self._bump(k)

    def soft(self, j: int, s: float, t: int) -> None:
        self._bump(j)

    def miss(self, k: int, t: int) -> None:
        if len(self.cached) >= self.capacity:
            bucket = self.buckets[self.min_count]
            victim, _ = bucket.popitem(last=False)
            if not bucket:
                del self.buckets[self.min_count]
            del self.cached[victim]
        self.cached[k] = 1
        bucket = self.buckets.get(1)
        if bucket is None:
            bucket = self.buckets[1] = OrderedDict()
        bucket[k] = None
        self.min_count = 1


class RandomEviction:
    """Evict a uniformly random cached item (seeded numpy Generator)."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rng = capacity, rng
        self.cached: dict[int, int] = {}  # item -> slot
        self.slots: list[int] = []
        self._draws: list[float] = []

    def hit(self, k: int, t: int) -> None:
        pass

    def soft(self, j: int, s: float, t: int) -> None:
        pass

    def miss(self, k: int, t: int) -> None:
        if len(self.slots) < self.capacity:
            self.cached[k] = len(self.slots)
            self.slots.append(k)
            return
        if not self._draws:
            self._draws = self.rng.random(4096).tolist()
        slot = int(self._draws.pop() * self.capacity)
        del self.cached[self.slots[slot]]
        self.slots[slot] = k
        self.cached[k] = slot


class StaticTop:
    """Static top-C popularity: the C items this edge requests most over the whole trace, fixed (offline oracle)."""

    def __init__(self, capacity: int, edge_items: np.ndarray) -> None:
        items, counts = np.unique(edge_items, return_counts=True)
        top = items[np.lexsort((items, -counts))][:capacity]
        self.capacity, self.cached = capacity, {int(k): None for k in top}

    def hit(self, k: int, t: int) -> None:
        pass

    def soft(self, j: int, s: float, t: int) -> None:
        pass

    def miss(self, k: int, t: int) -> None:
        pass


class Belady:
    """Belady's MIN with bypass (Belady 1966): on a miss with a full cache, of the cached items and the new one, drop
    the one requested again furthest in the future. Maximises direct hits for unit-size items; `next_use[t]` is the
    index of the next request for the same item at the same edge (len(trace) if none)."""

    def __init__(self, capacity: int, next_use: np.ndarray) -> None:
        self.capacity, self.next_use = capacity, next_use
        self.cached: dict[int, int] = {}  # item -> next use
        self.heap: list[tuple[int, int]] = []  # (-next use, item), lazily invalidated

    def hit(self, k: int, t: int) -> None:
        n = int(self.next_use[t])
        self.cached[k] = n
        heapq.heappush(self.heap, (-n, k))

    def soft(self, j: int, s: float, t: int) -> None:
        pass

    def miss(self, k: int, t: int) -> None:
        n = int(self.next_use[t])
        if len(self.cached) >= self.capacity:
            heap, cached = self.heap, self.cached
            while cached.get(heap[0][1]) != -heap[0][0]:
                heapq.heappop(heap)
            if -heap[0][0] <= n:
                return  # the new item is needed last: bypass
            del cached[heapq.heappop(heap)[1]]
        self.cached[k] = n
        heapq.heappush(self.heap, (-n, k))
        if len(self.heap) > 8 * self.capacity + 64:
            self.heap = [(-v, i) for i, v in self.cached.items()]
            heapq.heapify(self.heap)


class SimilarityLFU:
    """Similarity-aware LFU with admission control: every item keeps a score over the whole history (+1 per request
    for it, +s when it serves a soft hit with similarity s), so an item that substitutes well for others is worth
    keeping. A missed item is admitted only if its score exceeds the lowest cached score, which is then evicted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.score: dict[int, float] = {}
        self.cached: dict[int, float] = {}  # item -> score when last pushed
        self.heap: list[tuple[float, int]] = []

    def _push(self, k: int, value: float) -> None:
        self.cached[k] = value
        heapq.heappush(self.heap, (value, k))

    def hit(self, k: int, t: int) -> None:
        value = self.score.get(k, 0.0) + 1.0
        self.score[k] = value
        self._push(k, value)

    def soft(self, j: int, s: float, t: int) -> None:
        value = self.score.get(j, 0.0) + s
        self.score[j] = value
        self._push(j, value)

    def miss(self, k: int, t: int) -> None:
        self._admit(k, self.score.get(k, 0.0) + 1.0)

    def _admit(self, k: int, value: float) -> None:
        """Record k's new score; cache it if there is room or it beats the lowest cached score (then evicted)."""
        self.score[k] = value
        if len(self.cached) >= self.capacity:
            heap, cached = self.heap, self.cached
            while cached.get(heap[0][1]) != heap[0][0]:
                heapq.heappop(heap)
            if heap[0][0] >= value:
                return
            del cached[heapq.heappop(heap)[1]]
        self._push(k, value)
        if len(self.heap) > 8 * self.capacity + 64:
            self.heap = [(v, i) for i, v in self.cached.items()]
            heapq.heapify(self.heap)


class DecayedLFU(SimilarityLFU):
    """Similarity-aware LFU whose scores age (`dlfu`): every use adds to an item's score as in `SimilarityLFU`
    (+1 per request for it, +s when it serves a soft hit), but a use `half_life` of this edge's requests ago counts
    half as much, so items that were popular before a drift lose their place. Kept O(log C) by adding growing
    weights 2^(clock/half_life) instead of decaying every score (the same order), rescaled now and then."""

    def __init__(self, capacity: int, half_life: int) -> None:
        super().__init__(capacity)
        self.half_life, self.clock, self.base = half_life, 0, 0

    def _weight(self) -> float:
        self.clock += 1
        age = (self.clock - self.base) / self.half_life
        if age > 500:  # rescale every score by 2^-age so that the weights stay finite
            f = 2.0 ** -age
            self.score = {k: v * f for k, v in self.score.items()}
            self.cached = {k: v * f for k, v in self.cached.items()}
            self.heap = [(v, i) for i, v in self.cached.items()]
            heapq.heapify(self.heap)
            self.base, age = self.clock, 0.0
        return 2.0 ** age

    def hit(self, k: int, t: int) -> None:
        value = self.score.get(k, 0.0) + self._weight()
        self.score[k] = value
        self._push(k, value)

    def soft(self, j: int, s: float, t: int) -> None:
        value = self.score.get(j, 0.0) + s * self._weight()
        self.score[j] = value
        self._push(j, value)

    def miss(self, k: int, t: int) -> None:
        self._admit(k, self.score.get(k, 0.0) + self._weight())


def next_use(items: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """next_use[t] = the index of the next request for items[t] at edges[t], or len(items) if there is none."""
    n = len(items)
    key = edges.astype(np.int64) * (int(items.max()) + 1 if n else 1) + items
    out = np.full(n, n, dtype=np.int64)
    order = np.lexsort((np.arange(n), key))  # group by key, then time
    same = key[order][1:] == key[order][:-1]
    out[order[:-1][same]] = order[1:][same]
    return out
