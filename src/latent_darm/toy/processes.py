"""The demo's worker processes: one pool recipe for training its models and for evaluating its configurations.

Workers are spawned (no forked torch state) and each item runs on one torch thread in its own output directory, so
what an item produces does not depend on the process that ran it or on what ran beside it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from latent_darm.errors import ConfigError
from latent_darm.progress import progress_bar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    """The CPUs this process may run on (all of a laptop's cores; 2 on this project's CI machines)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_workers(workers: int) -> int:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    return workers


def map_in_processes(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    workers: int,
    description: str,
    progress: bool = True,
) -> list[Result]:
    """``function`` (a picklable module-level function) on every item in ``workers`` spawned processes, one bar over
    the items; results in ``items``' order. A failed item's error is raised after every other item has finished, so
    what they wrote is kept for the rerun."""
    processes = min(check_workers(workers), len(items))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool, progress_bar(progress) as bar:
        task = bar.add_task(f"{description} ({processes} processes)", total=len(items))
        futures = [pool.submit(function, item) for item in items]
        for _ in as_completed(futures):
            bar.advance(task)
    return [future.result() for future in futures]
