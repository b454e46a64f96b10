"""``darm report``: tables, paired tests and the accuracy–cost figure across results directories."""

from __future__ import annotations

from pathlib import Path

import typer

from latent_darm.cli.common import check_output_dir, console, output_path
from latent_darm.errors import ConfigError
from latent_darm.evaluation.report import write_report


def _parse_pairs(values: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        parts = [part.strip() for part in value.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--pair must be A,B (two labels or directory names), got {value!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def report_command(
    directories: list[Path] = typer.Argument(..., help="Results directories written by darm eval."),
    out: Path = typer.Option(
        "report", parser=output_path, metavar="<path>", help="Where to write report.md, the CSVs and the PNGs."
    ),
    pair: list[str] | None = typer.Option(
        None,
        "--pair",
        help="A,B: compare run A with run B (each a label or results directory name) by the exact McNemar test on "
        "the questions both answered; repeatable. Without it, every latent run is compared with every text run on "
        "the same benchmark whose planner has the same model, plan length, steps, block length, threshold, cache and "
        "latent-token setting (latent-only settings such as denoise-fraction are not compared).",
    ),
) -> None:
    """Accuracy (95% Wilson interval), tokens per stage and time per question, per benchmark and configuration;
    and paired latent-vs-text comparisons (only-A-right, only-B-right, exact McNemar p) matched by question id."""
    pairs = _parse_pairs(pair)
    check_output_dir(out)
    written = write_report(directories, out, pairs=pairs, echo=typer.echo)
    for path in written:
        typer.echo(str(path))
    console.print(f"wrote {len(written)} files to {out}", highlight=False)
