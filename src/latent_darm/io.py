"""Small file helpers every long job uses: line-numbered JSONL reading, guarded JSON parsing, crash-safe writes.

Every reader turns what Python's ``json`` can throw at untrusted input (malformed text, bytes that are not UTF-8,
an integer of thousands of digits, nesting deeper than the recursion limit) into one :class:`DataError` line, and
every writer turns a full disk into a :class:`DiskFullError` naming the file, so the CLI never shows a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from latent_darm.errors import DarmError, DataError, DiskFullError


def parse_json(text: str | bytes, where: str, error: type[DarmError] = DataError) -> Any:
    """``json.loads`` whose every failure on untrusted text is a one-line ``error`` naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise error(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        raise error(f"{where}: unreadable JSON value ({str(exc).split(';')[0]})") from None


def read_json_file(path: str | Path, error: type[DarmError] = DataError) -> Any:
    """A whole JSON file, decoded as UTF-8; a missing, unreadable or malformed file is a one-line ``error``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_json(text, str(path), error)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is a DataError naming file and line."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSONL file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte {exc.start} of the line)") from None
            if not line.strip():
                continue
            record = parse_json(line, f"{path}:{number}")
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


BAD_SUFFIX = ".bad"


def _results_line(raw: bytes, check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any] | str:
    """The record of one results line, or why it is unusable."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):  # malformed JSON, not UTF-8, an absurd number, absurd nesting
        return "malformed JSON"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    return check(record) or record


def read_results_jsonl(
    path: str | Path,
    check: Callable[[dict[str, Any]], str | None] = lambda _: None,
    *,
    repair: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The good records of an append-only results file, for a resume that recomputes whatever is missing.

    A torn last line (a kill mid-write, with or without its newline) is dropped. Any other unusable line
    (malformed, not an object, or refused by ``check``, which returns a reason or None) is left out too. With
    ``repair`` the file is fixed for the appends to come: the torn tail is cut, and unusable lines are moved to
    ``<path>.bad`` (appended, never lost) with one ``say`` line (default :func:`notice`); without, nothing is
    written. A missing file has no records."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete or data.startswith(b"\n") else []
    records: list[dict[str, Any]] = []
    good: list[bytes] = []
    bad: list[tuple[int, bytes, str]] = []
    torn = bool(tail)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _results_line(raw, check)
        if isinstance(record, dict):
            records.append(record)
            good.append(raw)
        elif number == len(lines) and not tail:
            torn = True  # a torn last line that happens to end where a newline was
        else:
            bad.append((number, raw, record))
    if repair and bad:
        side = path.with_name(path.name + BAD_SUFFIX)
        with side.open("ab") as handle:
            handle.write(b"".join(raw + b"\n" for _, raw, _ in bad))
            handle.flush()
            os.fsync(handle.fileno())
        number, _, reason = bad[0]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        (say or notice)(
            f"{path}: moved {len(bad)} unreadable line(s) (line {number}: {reason}{more}) to {side}; "
            "their items are computed again"
        )
    if bad and not repair:  # a reader (report, diagnose) must not cover fewer items than the run without a word
        number, _, reason = bad[0]
        (say or notice)(
            f"{path}: skipped {len(bad)} unreadable line(s) (line {number}: {reason}); rerun the job that wrote it "
            "to set them aside and compute their items again"
        )
    if repair and (bad or torn):
        atomic_write_bytes(path, b"".join(raw + b"\n" for raw in good))
    return records


def notice(message: str) -> None:
    """One line on stderr for something a job recovered from by itself (a torn file set aside, a state skipped)."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# How writers that are not Python's own report a failed write: safetensors (Rust I/O errors) and torch.save's
# zip writer (``inline_container.cc``: "PytorchStreamWriter failed writing file …: file write failed").
_FOREIGN_WRITE_FAILURES = (
    "No space left on device",
    "Disk quota exceeded",
    "os error 28",
    "os error 122",
    "StorageFull",
    "PytorchStreamWriter failed writing file",
    "file write failed",
)


def is_write_failure(exc: BaseException) -> bool:
    """A full disk, as an OSError or as the error of a library that writes files itself (safetensors, torch)."""
    if is_disk_full(exc):
        return True
    return not isinstance(exc, OSError) and any(text in str(exc) for text in _FOREIGN_WRITE_FAILURES)


@contextmanager
def on_full_disk(path: object, message: str | Callable[[], str], *, restate: bool = False) -> Iterator[None]:
    """The one place a full disk becomes a :class:`DiskFullError`: a write failure inside the block (Python's
    OSError, or a library's own error for it) is raised again as ``DiskFullError(message, path)``. ``message``
    says what was kept; a callable is called only then (to count what was kept). A DiskFullError of a writer
    inside the block keeps its own message, unless ``restate``."""
    try:
        yield
    except DiskFullError:
        if not restate:
            raise
        raise DiskFullError(message if isinstance(message, str) else message(), path) from None
    except DarmError:
        raise
    except Exception as exc:
        if not is_write_failure(exc):
            raise
        raise DiskFullError(message if isinstance(message, str) else message(), path) from None


def writing(path: str | Path, kept: str) -> AbstractContextManager[None]:
    """Turn a full disk inside the block (any writer's error for it) into a :class:`DiskFullError` naming
    ``path`` and saying what was ``kept``."""
    return on_full_disk(path, f"disk full while writing {path}; {kept}: free space and rerun")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half a file. A full disk
    leaves the previous version of ``path`` in place and raises :class:`DiskFullError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")

    def message() -> str:
        kept = "its previous version is kept" if path.exists() else "nothing was written"
        return f"disk full while writing {path}; {kept}"

    try:
        with on_full_disk(path, message):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one line and fsync: a killed job loses at most the line being written (readers skip a torn tail)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = f"disk full while appending to {path}; the lines before it are kept"
    with on_full_disk(path, kept), path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
