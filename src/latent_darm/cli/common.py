"""Shared CLI plumbing: error reporting, the stderr console, dtype/device options."""

from __future__ import annotations

import traceback

import click
import torch
import typer
from rich.console import Console

from latent_darm.errors import DarmError

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


AUTO_DTYPE_HELP = "auto (float32 on CPU, bfloat16 on GPU) | float32 | bfloat16 | float16."


def auto_dtype(device: str | torch.device) -> torch.dtype:
    """The one default everywhere: float32 on CPU (exact, batch-independent answers), bfloat16 on a GPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def parse_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``--dtype`` value → torch dtype; ``auto`` resolves for ``device`` (see :func:`auto_dtype`)."""
    if name.lower() == "auto":
        return auto_dtype(device)
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise DarmError(f"--dtype must be one of auto, {', '.join(sorted(DTYPES))}; got {name!r}") from None


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; an unavailable CUDA request is a clear error, not a crash later."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DarmError(f"--device {name}: CUDA is not available on this machine")
    return name


def run_app(app: typer.Typer) -> int:
    """Run the app; turn DarmError into one stderr line and exit code 2 unless --debug."""
    try:
        app(standalone_mode=False)
    except DarmError as exc:
        if DEBUG:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
