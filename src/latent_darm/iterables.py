"""Small helpers over sequences that both evaluation and training need (they may not import each other)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


def first_per_key(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """The first item of each key, in their order: a dedupe that keeps which copy survives deterministic."""
    first: dict[Hashable, T] = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())
