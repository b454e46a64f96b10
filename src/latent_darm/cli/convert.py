"""``darm convert``: a GGUF file → a normal Hugging Face checkpoint directory (config.json, model.safetensors,
tokenizer with its chat template), for tools that do not read GGUF or to skip dequantizing at every load."""

from __future__ import annotations

from pathlib import Path

import typer

from latent_darm.cli.app import app
from latent_darm.cli.choices import Dtype
from latent_darm.cli.common import console, parse_dtype, resolve_dtype
from latent_darm.errors import CheckpointError


@app.command("convert")
def convert_command(
    gguf: Path = typer.Argument(..., help="A .gguf file, or a directory holding exactly one."),
    out: Path = typer.Argument(..., help="New checkpoint directory (must not exist or be empty)."),
    dtype: Dtype = typer.Option(
        Dtype.float32, case_sensitive=False, help="The dequantized weights' dtype (auto: float32 on this CPU)."
    ),
) -> None:
    """Dequantize a GGUF causal LM into a safetensors checkpoint that every command (and transformers) opens."""
    from latent_darm.models.gguf import convert_gguf, find_gguf

    if not gguf.exists():
        raise CheckpointError(f"GGUF file not found: {gguf}")
    file = find_gguf(gguf)
    if file is None:
        raise CheckpointError(f"{gguf}: not a .gguf file, nor a directory holding one (and no config.json)")
    with console.status(f"converting {file.name}"):
        convert_gguf(file, out, parse_dtype(resolve_dtype(dtype.value, "cpu")))
    console.print(f"wrote {out}", highlight=False)
