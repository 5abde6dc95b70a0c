"""Run the grid's unfinished cells over worker processes, with one overall progress bar counted in rounds.

Workers are started with `spawn` (no forked torch/OpenMP state) and run with one torch thread each, so a cell's
numbers do not depend on how many workers ran or which worker took it: results.csv is the same for any `--workers`
and for an interrupted-then-resumed run. With one worker the cells run in this process.

Ctrl-C reaches every process of the terminal's process group: workers ignore it, and the command, on its
KeyboardInterrupt, terminates them (their unfinished cells are simply not stored), so the only output is the
command's one line.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fedge.output import progress_bar
from fedge.reproduce.cache import CellCache, run_cell
from fedge.reproduce.grid import Cell

_TICKS: Any = None
_PARENT: int | None = None


@dataclass
class PoolStats:
    total: int  # cells in the grid
    cached: int  # found finished in the cache
    computed: int  # computed by this run
    seconds: float  # summed compute seconds of the cells this run computed


def _init_worker(ticks: Any, parent: int) -> None:
    global _TICKS, _PARENT
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the workers

    torch.set_num_threads(1)
    _TICKS, _PARENT = ticks, parent


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with Ctrl-C ignored from their first instruction: a process started while SIGINT is
    ignored keeps ignoring it, so a Ctrl-C that reaches the process group while a worker still imports torch
    cannot print its traceback (`_init_worker` runs only after the imports). The parent ends the workers itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _task(cell: Cell, folder: str) -> float:
    return run_cell(cell, folder, tick=lambda: _TICKS.put(cell.key), parent_pid=_PARENT)


def default_workers() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    from fedge.runtimes.device_threads import available_cores

    return available_cores()


def run_grid(cells: list[Cell], cache: CellCache, workers: int, progress: bool = True) -> PoolStats:
    """Compute every cell not yet in `cache`. Cells with the most devices go first (they take longest), cells
    sharing data stay adjacent so a worker can reuse its loaded setup."""
    pending = sorted((c for c in cells if not cache.has(c)),
                     key=lambda c: (-c.devices, c.seed, c.delta, c.algorithm))
    stats = PoolStats(total=len(cells), cached=len(cells) - len(pending), computed=0, seconds=0.0)
    if not pending:
        return stats
    rounds = {c.key: int(c.config["rounds"]) for c in pending}
    with progress_bar("reproduce (rounds)", total=sum(rounds.values()), enabled=progress) as advance:
        status = lambda: f"cells {stats.cached + stats.computed}/{stats.total}"  # noqa: E731
        if workers <= 1 or len(pending) == 1:
            from fedge.runtimes.device_threads import intra_op_threads

            with intra_op_threads(1):  # as a pool worker would; the caller's thread count is restored after
                for cell in pending:
                    stats.seconds += run_cell(cell, str(cache.folder), tick=lambda: advance(1, status=status()))
                    stats.computed += 1
                    advance(0, status=status())
            return stats
        _run_pool(pending, cache, min(workers, len(pending)), rounds, stats, advance, status)
    return stats


def _run_pool(pending: list[Cell], cache: CellCache, workers: int, rounds: dict[str, int], stats: PoolStats,
              advance: Any, status: Any) -> None:
    context = mp.get_context("spawn")
    ticks = context.Queue()
    seen = dict.fromkeys(rounds, 0)

    def drain() -> None:
        while True:
            try:
                key = ticks.get_nowait()
            except queue_module.Empty:
                return
            if seen[key] < rounds[key]:  # a late tick of a cell already counted in full is dropped
                seen[key] += 1
                advance(1, status=status())

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(ticks, os.getpid()))
    try:
        with _workers_ignore_ctrl_c():
            futures = {pool.submit(_task, cell, str(cache.folder)): cell for cell in pending}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, timeout=0.25, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                stats.seconds += future.result()  # re-raises a worker's error (e.g. missing data files)
                stats.computed += 1
                key = futures[future].key
                missing = rounds[key] - seen[key]
                if missing > 0:  # ticks still in flight, or the cell was found finished by the worker
                    seen[key] += missing
                    advance(missing, status=status())
                advance(0, status=status())
    except BaseException:
        workers_left = list((getattr(pool, "_processes", None) or {}).values())
        for process in workers_left:
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    drain()
