"""Resume checks: the first difference between a stored configuration and the wanted one, for a one-line refusal.

Shared by evaluation runs and projector training (both refuse to mix results of different settings in one
directory).
"""

from __future__ import annotations

import json
from typing import Any

# Keys that name a run without changing its answers: a new value is accepted on resume.
COSMETIC_KEYS = frozenset({"label"})
ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def first_difference(
    stored: dict[str, Any], wanted: dict[str, Any], cosmetic: frozenset[str] = COSMETIC_KEYS
) -> tuple[str, Any, Any] | None:
    """The first dotted key (in ``wanted``'s order) whose value differs, with both values (:data:`ABSENT` where a
    side lacks the key); ``cosmetic`` top-level keys skipped."""
    old, new = _flatten(stored), _flatten(wanted)
    for key in [*new, *(k for k in old if k not in new)]:
        if key.split(".")[0] in cosmetic:
            continue
        if old.get(key, ABSENT) != new.get(key, ABSENT):
            return key, old.get(key, ABSENT), new.get(key, ABSENT)
    return None


def short(value: Any) -> str:
    """A value for an error line: JSON, at most 40 characters; ``(absent)`` for a missing key."""
    text = "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
