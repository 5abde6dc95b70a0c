"""Who shares secrets with whom: the complete graph (SecAgg, Bonawitz et al. CCS 2017) or a random k-regular graph
(SecAgg+, Bell et al. CCS 2020), over the participants of one round.

SecAgg+'s graph makes a device's work and bytes grow with k ~ log n instead of n. The random k-regular graph here is
a Harary graph (each device linked to the k/2 nearest on either side of a ring) over a random order of the
participants drawn from the run's "secagg-graph" stream of the round: every device has exactly k neighbours, and
which ones is unknown before the round. With k at least the number of other participants it is the complete graph.
"""

from __future__ import annotations

import torch

from fedge.core.streams import generator


def neighbourhoods(ids: list[int], neighbours: int | None, seed: int, round_number: int) -> dict[int, list[int]]:
    """{device id: sorted ids of its neighbours} over the participants `ids` (sorted). `neighbours` None, or at
    least len(ids) − 1: everyone else (complete graph); otherwise an even k: the random Harary graph."""
    ids = sorted(ids)
    n = len(ids)
    if neighbours is None or neighbours >= n - 1:
        return {u: [v for v in ids if v != u] for u in ids}
    if neighbours % 2:
        raise ValueError(f"a k-regular ring graph needs an even k, got {neighbours}")
    order = torch.randperm(n, generator=generator(seed, "secagg-graph", round_number)).tolist()
    ring = [ids[i] for i in order]
    links: dict[int, set[int]] = {u: set() for u in ids}
    for position, u in enumerate(ring):
        for offset in range(1, neighbours // 2 + 1):
            v = ring[(position + offset) % n]
            links[u].add(v)
            links[v].add(u)
    return {u: sorted(links[u]) for u in ids}


__all__ = ["neighbourhoods"]
