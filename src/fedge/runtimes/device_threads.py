"""Device-parallel execution for the sequential trainer: W threads, each training whole devices on one core.

Small convolutional models train slowly through intra-op parallelism (a LeNet-5 step on batch 32 is a few dozen
tiny kernels; splitting each of them over two cores gains about 1.3x). Devices are independent during local training,
so fedge instead trains W devices at once, one per thread, each thread with its own copy of the module
(`Replica`) and with torch's intra-op parallelism set to one thread: the same plan as Flower's simulation (one
client per core), without processes. PyTorch releases the GIL inside its operators, so the threads run in parallel.

Results do not depend on W: every device is computed entirely on one thread with one intra-op thread, from the
minibatch plan drawn beforehand in the caller's order, and writes only its own rows.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

from fedge.models.flat import FlatModel

Item = TypeVar("Item")


class Replica:
    """A copy of the model's module whose parameters view one flat working vector `work` (and whose gradients one
    flat `grad` vector), so a device's row is loaded with one copy and each step is a plain module forward/backward."""

    def __init__(self, model: FlatModel) -> None:
        self.module = copy.deepcopy(model.module)
        self.work = torch.zeros(model.dim)
        self.grad = torch.zeros(model.dim)
        for s, p in zip(model.slices, self.module.parameters(), strict=True):
            p.data = self.work[s.start:s.stop].view(s.shape)
            p.requires_grad_(True)
            p.grad = self.grad[s.start:s.stop].view(s.shape)


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to `count`, restoring the previous count after."""
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if previous != count:
            torch.set_num_threads(previous)


def for_each_on_threads(items: Sequence[Item], work: Callable[[Replica, Item], None],
                        replicas: Sequence[Replica]) -> None:
    """Call `work(replica, item)` for every item, on min(len(replicas), len(items)) threads that each take the next
    unprocessed item. With one replica (or one item) everything runs in the calling thread. The first exception of
    any thread is re-raised here once all threads have stopped."""
    workers = min(len(replicas), len(items))
    if workers <= 1:
        for item in items:
            work(replicas[0], item)
        return
    counter = itertools.count()
    errors: list[BaseException] = []

    def loop(replica: Replica) -> None:
        try:
            while not errors and (index := next(counter)) < len(items):
                work(replica, items[index])
        except BaseException as error:  # re-raised in the calling thread below
            errors.append(error)

    with intra_op_threads(1):
        threads = [threading.Thread(target=loop, args=(replicas[w],), daemon=True) for w in range(workers)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException as interrupt:  # Ctrl-C while waiting: let every thread finish its device, then stop
            errors.append(interrupt)
            for thread in threads:
                thread.join()
            raise
    if errors:
        raise errors[0]


__all__ = ["Replica", "available_cores", "for_each_on_threads", "intra_op_threads"]
