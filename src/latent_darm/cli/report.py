"""``darm report``: tables and the accuracy–cost figure across results directories."""

from __future__ import annotations

from pathlib import Path

import typer

from latent_darm.cli.app import app
from latent_darm.cli.common import check_output_dir, console, output_path
from latent_darm.evaluation.report import write_report


@app.command("report")
def report_command(
    directories: list[Path] = typer.Argument(..., help="Results directories written by darm eval."),
    out: Path = typer.Option(
        "report", parser=output_path, metavar="<path>", help="Where to write report.md, the CSVs and the PNGs."
    ),
) -> None:
    """Accuracy (95% Wilson interval), tokens per stage and time per question, per benchmark and configuration."""
    check_output_dir(out)
    written = write_report(directories, out)
    for path in written:
        typer.echo(str(path))
    console.print(f"wrote {len(written)} files to {out}", highlight=False)
