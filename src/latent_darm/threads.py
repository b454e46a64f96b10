"""Torch's CPU thread count for a block of work: tiny models (the toy world, the puzzle variants) train and decode
faster on one thread than with two threads fighting over a small, shared CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """One torch thread inside the block (``enabled=False``: leave it alone, e.g. on a GPU); restored after."""
    if not enabled:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
