"""The one progress bar every long job shows on stderr (stdout stays machine-readable)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(
    enabled: bool = True, *fields: str, remaining: bool = True, transient: bool = False, console: Console | None = None
) -> Progress:
    """Description, bar, done/total, then one text column per ``fields`` format (e.g. ``"loss {task.fields[loss]}"``),
    elapsed and (``remaining``) estimated time left. Disabled, it renders nothing."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *map(TextColumn, fields)]
    columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console or Console(stderr=True), disable=not enabled, transient=transient)
