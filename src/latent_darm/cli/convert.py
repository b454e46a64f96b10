"""``darm convert``: a GGUF file → a normal Hugging Face checkpoint directory (config.json, model.safetensors,
tokenizer with its chat template), for tools that do not read GGUF or to skip dequantizing at every load."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from latent_darm.cli.choices import Dtype
from latent_darm.cli.common import check_output_dir, console, parse_dtype, resolve_dtype
from latent_darm.errors import CheckpointError
from latent_darm.io import writing


def convert_command(
    gguf: Path = typer.Argument(..., help="A .gguf file, or a directory holding exactly one."),
    out: Path = typer.Argument(..., help="New checkpoint directory (must not exist or be empty)."),
    dtype: Dtype = typer.Option(
        Dtype.float32, case_sensitive=False, help="The dequantized weights' dtype (auto: float32 on this CPU)."
    ),
) -> None:
    """Dequantize a GGUF causal LM into a safetensors checkpoint that every command (and transformers) opens."""
    from latent_darm.models.gguf import find_gguf

    if not gguf.exists():
        raise CheckpointError(f"GGUF file not found: {gguf}")
    file = find_gguf(gguf)
    if file is None:
        raise CheckpointError(f"{gguf}: not a .gguf file, nor a directory holding one (and no config.json)")
    write_converted(file, out, dtype, "OUT")


def write_converted(file: Path, out: Path, dtype: Dtype, option: str) -> None:
    """Convert the GGUF ``file`` into the new checkpoint directory ``out`` (named ``option`` in errors), as ``darm
    convert`` and ``darm fetch-gguf --convert`` both do: written beside it and renamed when whole, so a full disk or
    a kill never leaves half a checkpoint that looks converted in ``out``."""
    import transformers

    from latent_darm.models.gguf import convert_gguf

    created = not out.exists()
    check_output_dir(out, option)  # a file, a read-only or unwritable place: one line before the minutes of reading
    if any(out.iterdir()):
        raise CheckpointError(f"{option} {out} exists and is not empty; choose a new output directory")
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # the status line is the progress; stderr stays one line
    try:
        with console.status(f"converting {file.name}"), writing(out, "nothing was written to it"):
            convert_gguf(file, staging, parse_dtype(resolve_dtype(dtype.value, "cpu")))
        out.rmdir()
        staging.rename(out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # the check made it; a failed conversion leaves no trace
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    console.print(f"wrote {out}", highlight=False)
