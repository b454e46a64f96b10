"""``darm solve``: answer one question with any pipeline and show the plan, the answer and where tokens went."""

from __future__ import annotations

import json

import typer

from latent_darm.cli.choices import DEVICE_HELP, PipelineKind, complete_device
from latent_darm.cli.common import console, resolve_device
from latent_darm.cli.options import PipelineOptions, with_option_groups
from latent_darm.errors import DataError
from latent_darm.grading import check_answer_type, extract_answer


@with_option_groups
def solve_command(
    question: str = typer.Argument(..., help="The question to answer."),
    pipeline: PipelineKind = typer.Option(PipelineKind.latent, help="Which pipeline to run."),
    options: PipelineOptions = ...,  # type: ignore[assignment]  (expanded into its options)
    answer_type: str = typer.Option("math", help="math | integer | mc (sets the answer-format instruction)."),
    device: str = typer.Option("auto", help=DEVICE_HELP, autocompletion=complete_device),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Answer QUESTION and print the plan, the answer and the token accounting."""
    if not question.strip():
        raise DataError("the question is empty")
    check_answer_type(answer_type)
    run_device = resolve_device(device)
    spec = options.spec(pipeline.value, run_device)
    from latent_darm.pipelines.factory import build_pipeline

    with console.status("loading models"):
        built = build_pipeline({**spec, "device": run_device})
    with console.status(f"solving with {built.name}"):
        result = built.run([question], answer_type)[0]  # type: ignore[arg-type]
    extracted = extract_answer(result.output, answer_type, truncated=result.truncated)
    if as_json:
        typer.echo(json.dumps({"pipeline": built.name, **result.to_dict(), "extracted": extracted}, ensure_ascii=False))
        return
    a = result.accounting
    if result.plan is not None:
        latent = pipeline is PipelineKind.latent
        label = "plan (decoded for inspection; the executor read latents)" if latent else "plan"
        typer.echo(f"── {label}\n{result.plan}\n")
    typer.echo(f"── answer\n{result.output}\n")
    typer.echo(f"── extracted: {extracted}")
    typer.echo(
        f"── tokens: planner {a.planner_tokens} + executor {a.executor_tokens} = {a.total_tokens}; forward passes: "
        f"planner {a.planner_forward_passes}, executor {a.executor_forward_passes}; {a.seconds:.2f} s"
    )
