"""Shared CLI plumbing: error reporting, the stderr console, dtype/device/output-directory checks."""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path

import click
import torch
import typer
from rich.console import Console

from latent_darm.errors import ConfigError, DarmError
from latent_darm.io import is_disk_full

DEBUG = False
# Progress and messages go to stderr so stdout stays machine-readable (``--json``, ``darm grade``).
console = Console(stderr=True)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise DarmError(f"--dtype must be one of {', '.join(sorted(DTYPES))}; got {name!r}") from None


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; an unknown or unavailable device is a clear error, not a crash later."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return name


def check_positive(option: str, value: int | None) -> None:
    """An optional count option given as 0 or less is an error (not silently its default)."""
    if value is not None and value < 1:
        raise ConfigError(f"--{option} must be >= 1, got {value}")


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Refuse an output directory that cannot be written (a file, a read-only directory, an unwritable parent)
    before any model is loaded: creates it and writes and deletes a probe file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; expected a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".darm-probe-"):
            pass
    except FileExistsError:
        raise ConfigError(f"{option} {path}: a parent of it is a file") from None
    except NotADirectoryError:
        raise ConfigError(f"{option} {path}: a parent of it is a file") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path} is not writable ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path} is not writable (permission denied)")


def run_app(app: typer.Typer) -> int:
    """Run the app; turn DarmError into one stderr line and exit code 2 unless --debug."""
    try:
        app(standalone_mode=False)
    except DarmError as exc:
        if DEBUG:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        if DEBUG:
            traceback.print_exc()
        where = f" while writing {exc.filename}" if exc.filename else ""
        console.print(
            f"[bold red]error:[/] disk full{where}; files finished before it are kept (long jobs write atomically): "
            "free space and rerun the same command to resume",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except click.exceptions.Abort:
        console.print("aborted")
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0
