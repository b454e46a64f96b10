"""``darm diagnose``: attribute the failures of results directories to the planner or the executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.common import check_output_dir, console, output_path, runtime_device
from latent_darm.errors import ConfigError
from latent_darm.evaluation.diagnose import Diagnosis, diagnose, plot_attribution
from latent_darm.evaluation.runner import current_processes


def diagnose_command(
    directories: list[Path] = typer.Argument(..., help="Results directories written by darm eval."),
    ar_planner: str = typer.Option(None, help="Setup X's autoregressive planner (default: the run's executor)."),
    diffusion_executor: str = typer.Option(None, help="Setup Y's diffusion executor (default: the run's planner)."),
    diffusion_gen_length: int = typer.Option(None, help="Setup Y's answer canvas (default: the answer budget)."),
    batch_size: int = typer.Option(8, help="Questions per pipeline call."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    out: Path = typer.Option(
        None,
        parser=output_path,
        metavar="<path>",
        help="Where to write diagnosis.png (default: the directory, or . for several).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    attention: bool = typer.Option(
        False,
        "--attention",
        help="Instead: per executor layer, the attention share of the answer positions on the plan slots (soft "
        "tokens or plan text), the question, the rest of the prompt and the executor's own output, split by correct "
        "and wrong answers (latent and text runs; the latent planner is re-run). Writes attention.csv, attention.md "
        "and attention.png to --out (default as for the chart).",
    ),
    limit: int = typer.Option(50, help="--attention: the first N finished items of each directory."),
) -> None:
    """Setup X (planner swap) and Y (executor swap) on each failure; writes diagnosis.jsonl/.json and a chart."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    runtime = {"device": runtime_device(device)}
    if out is not None:
        check_output_dir(out)
    if attention:
        _attention(directories, runtime, limit, out or (directories[0] if len(directories) == 1 else Path(".")))
        return
    main = current_processes().is_main
    swaps = dict(
        ar_planner=ar_planner, diffusion_executor=diffusion_executor, diffusion_gen_length=diffusion_gen_length
    )
    diagnoses = [_diagnose_one(directory, swaps, runtime, batch_size, progress, main) for directory in directories]
    if not main:
        return
    chart_dir = out or (directories[0] if len(directories) == 1 else Path("."))
    chart_dir.mkdir(parents=True, exist_ok=True)
    chart = chart_dir / "diagnosis.png"
    plot_attribution(diagnoses, chart)
    typer.echo(str(chart))


def _diagnose_one(
    directory: Path, swaps: dict[str, Any], runtime: dict[str, str], batch_size: int, progress: bool, main: bool
) -> Diagnosis:
    """Both swaps on one directory's failures; the main process prints the attribution counts."""
    from latent_darm.pipelines.factory import build_pipeline

    diagnosis = diagnose(directory, build_pipeline, **swaps, runtime=runtime, batch_size=batch_size, progress=progress)
    if main:
        counts = diagnosis.counts()
        console.print(
            f"{diagnosis.label} on {diagnosis.benchmark}: {len(diagnosis.items)} failed of {diagnosis.n_items}; "
            + ", ".join(f"{name} {count}" for name, count in counts.items()),
            highlight=False,
            soft_wrap=True,
        )
        typer.echo(str(Path(directory) / "diagnosis.json"))
    return diagnosis


def _attention(directories: list[Path], runtime: dict[str, str], limit: int, out: Path) -> None:
    """``--attention``: rebuild each run's pipeline from its stored spec and profile its executor's attention."""
    from latent_darm.evaluation.attention import attention_profile, write_attention
    from latent_darm.evaluation.report import load_run
    from latent_darm.pipelines.factory import build_pipeline

    rows = []
    for directory in directories:
        run = load_run(directory)
        spec = run.config.get("spec")
        if not isinstance(spec, dict) or spec.get("kind") not in ("latent", "text"):
            raise ConfigError(f"--attention: {directory} is not a latent or text run written by darm eval")
        with console.status(f"attention of {run.label}"):
            rows += attention_profile(run, build_pipeline({**spec, **runtime}), limit)
    for path in write_attention(rows, out):
        typer.echo(str(path))
