"""Shared CLI plumbing: error reporting, the stderr console, dtype/device/count/output-directory checks.

Nothing here imports torch at module level: ``darm --help`` must answer at once.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
import typer
from rich.console import Console
from rich.markup import escape

from latent_darm.dtypes import canonical_dtype, resolve_dtype_name, torch_dtype
from latent_darm.errors import ConfigError, DarmError
from latent_darm.io import is_write_failure
from latent_darm.seeds import MAX_SEED

if TYPE_CHECKING:
    import torch

DEBUG = False
# Progress and messages go to stderr so stdout stays machine-readable (``--json``, ``darm grade``).
console = Console(stderr=True)


def parse_dtype(name: str) -> torch.dtype:
    """A non-auto ``--dtype`` (aliases such as bf16 accepted) as a torch dtype."""
    return torch_dtype(canonical_dtype(str(name)))


def resolve_dtype(name: str, device: str) -> str:
    """``--dtype`` for a resolved device, as the canonical name a spec stores: ``auto`` is float32 on CPU and
    bfloat16 on CUDA, in every command."""
    return resolve_dtype_name(str(name), str(device))


DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; an unknown or unavailable device is a clear error, not a crash later."""
    import torch

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


def runtime_device(device: str) -> str:
    """``--device`` where a command runs a pipeline: under ``accelerate launch`` with several processes, ``auto``
    means this process's own GPU."""
    if device == "auto":
        from latent_darm.evaluation.runner import accelerate_state

        state = accelerate_state()
        if state.num_processes > 1:
            return str(state.device)
    return resolve_device(device)


def check_seed(value: int | None, option: str = "--seed") -> int | None:
    """A ``--seed`` every command can use as given: a negative or huge one would fail deep in torch, numpy or
    datasets with a traceback ("Overflow when unpacking long long", "expected non-negative integer")."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{option} must be an integer from 0 to {MAX_SEED}, got {value}")
    return value


def seed_callback(value: int | None) -> int | None:
    """``callback=`` of every command's ``--seed`` option: checked while the line is parsed, before any work."""
    return check_seed(value)


LOOKAHEAD_HELP = (
    "LLaDA: masked positions after the block each pass computes, at their true positions ('all', the default = "
    "exact mode)."
)
LOOKAHEAD_CHOICE_HELP = "Which N for --lookahead: nearest (after the block; default) | random (drawn each step)."
# The He et al. knob's former names, kept hidden for one release.
DEPRECATED_LOOKAHEAD = {"--latent-tokens": "--lookahead", "--latent-choice": "--lookahead-choice"}


def lookahead_options(
    lookahead: str | None, lookahead_choice: str | None, latent_tokens: str | None, latent_choice: str | None
) -> tuple[int | None, str | None]:
    """``--lookahead`` (a count or 'all') and ``--lookahead-choice``, or their deprecated names ``--latent-tokens`` /
    ``--latent-choice`` with one warning line on stderr; an old and a new name together are a one-line error."""
    from latent_darm.models.llada.sampler_config import parse_lookahead

    given = {"--latent-tokens": (latent_tokens, lookahead), "--latent-choice": (latent_choice, lookahead_choice)}
    old = [name for name, (value, _) in given.items() if value is not None]
    for name in old:
        if given[name][1] is not None:
            raise ConfigError(f"{name} is the deprecated name of {DEPRECATED_LOOKAHEAD[name]}; give only the latter")
    option = "--latent-tokens" if latent_tokens is not None else "--lookahead"
    count = parse_lookahead(latent_tokens if latent_tokens is not None else lookahead, option)
    if old:  # after the checks: a bad value is one line
        renamed = ", ".join(f"{name} is now {DEPRECATED_LOOKAHEAD[name]}" for name in old)
        typer.echo(f"warning: {renamed} (the old name goes in the next release)", err=True)
    return count, latent_choice if latent_choice is not None else lookahead_choice


def nonempty_path(option: str) -> Callable[[str], Path]:
    """A ``parser=`` for a directory option as typed: an empty string would become ``.`` and scatter files into the
    current directory."""

    def parse(value: str) -> Path:
        if not str(value).strip():
            raise ConfigError(f"{option} is empty; give a directory (use . for the current one)")
        return Path(value)

    return parse


output_path = nonempty_path("--out")
cache_dir_path = nonempty_path("--cache-dir")


PLACEMENT_HELP = (
    "Where the executor reads the soft tokens: prefix (the paper's: before the chat prompt), inline (where the text "
    "pipeline's executor prompt puts the plan), prefix-cue (the authors' code: prefix, then a short cue)."
)


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
    except (FileExistsError, NotADirectoryError):
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
        # Escaped: a message may hold brackets (``latent-darm[plot]``, tensor shapes) that are not rich markup.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except BAD_PARAMETER as exc:
        choice = choice_error(exc)
        if choice is None:
            exc.show()
            return exc.exit_code
        console.print(f"[bold red]error:[/] {choice}", highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.Abort:
        console.print("aborted")
        return 130
    except CLICK_ERRORS as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # last: a full disk: Python's OSError, or safetensors' and torch's own write errors
        if not is_write_failure(exc):
            raise
        if DEBUG:
            traceback.print_exc()
        filename = getattr(exc, "filename", None)
        where = f" while writing {filename}" if filename else ""
        console.print(
            f"[bold red]error:[/] disk full{escape(where)}; files finished before it are kept (long jobs write "
            "atomically): free space and rerun the same command to resume",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    return 0


def _click_classes(name: str) -> tuple[type[Exception], ...]:
    """click's exception class ``name`` and, where typer vendors its own click (typer ≥ 0.2x), typer's too."""
    classes: list[type[Exception]] = [getattr(click.exceptions, name)]
    try:
        vendored = importlib.import_module("typer._click.exceptions")
    except ImportError:
        return tuple(classes)
    return (*classes, getattr(vendored, name))


BAD_PARAMETER = _click_classes("BadParameter")
CLICK_ERRORS = _click_classes("ClickException")
_NOT_A_CHOICE = re.compile(r"'(.*)' is not one of ((?:'[^']*'(?:, )?)+)")


def choice_error(exc: Exception) -> str | None:
    """A value outside an enum option's choices as the project's one-line error (``--dtype must be one of …; got
    'int8'``), like the checks the commands make themselves; None for any other bad parameter."""
    param = getattr(exc, "param", None)
    found = _NOT_A_CHOICE.search(getattr(exc, "message", "") or str(exc))
    if param is None or not getattr(param, "opts", None) or found is None:
        return None
    name = max(param.opts, key=len)
    choices = ", ".join(re.findall(r"'([^']*)'", found.group(2)))
    return f"{name} must be one of {choices}; got {found.group(1)!r}"
