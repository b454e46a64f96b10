"""``darm solve``: answer one question with any pipeline and show the plan, the answer and where tokens went."""

from __future__ import annotations

import json

import typer

from latent_darm.cli.app import app
from latent_darm.cli.choices import DEVICE_HELP, Cache, Dtype, PipelineKind, complete_device
from latent_darm.cli.common import PLACEMENT_HELP, console, resolve_device
from latent_darm.cli.eval import build_spec
from latent_darm.errors import DataError
from latent_darm.grading import check_answer_type, extract_answer


@app.command()
def solve(
    question: str = typer.Argument(..., help="The question to answer."),
    pipeline: PipelineKind = typer.Option(PipelineKind.latent, help="Which pipeline to run."),
    planner: str = typer.Option(None, help="Planner checkpoint (text, latent)."),
    executor: str = typer.Option(None, help="Executor checkpoint."),
    projector: str = typer.Option(None, help="Projector checkpoint (latent)."),
    planner_kind: str = typer.Option(None, help="Text pairing: ddlm (default) | arm."),
    executor_kind: str = typer.Option(None, help="Text pairing: arm (default) | ddlm."),
    answer_type: str = typer.Option("math", help="math | integer | mc (sets the answer-format instruction)."),
    gen_length: int = typer.Option(None, help="Plan length (default: latent, the projector's; text 256)."),
    steps: int = typer.Option(
        None, help="Denoising steps (default: latent, as the projector was trained; else gen-length)."
    ),
    block_length: int = typer.Option(
        None, help="Block length (LLaDA only; default: latent, as the projector was trained; else 32)."
    ),
    threshold: float = typer.Option(None, help="Fast mode: confidence threshold τ."),
    cache: Cache = typer.Option(None, help="Fast mode: block KV cache (default: latent, as trained; else none)."),
    denoise_fraction: float = typer.Option(
        None, help="Latent: plan latents after this share of the denoising steps (default: as trained, else 1)."
    ),
    max_new_tokens: int = typer.Option(None, help="Answer budget."),
    repetition_penalty: float = typer.Option(1.0, help="Autoregressive repetition penalty."),
    chain_of_thought: bool = typer.Option(False, "--chain-of-thought", help="arm / ddlm alone: reason first."),
    latent_noise: float = typer.Option(0.0, help="Latent: noise relative to the latents' RMS (control)."),
    prompts: str = typer.Option(None, help="JSON/YAML file overriding prompt templates."),
    system_prompt: str = typer.Option(None, help="ARM chat prompts: this system turn (default: an empty one)."),
    no_system_turn: bool = typer.Option(
        False, "--no-system-turn", help="ARM chat prompts: no system turn (the chat template's own default applies)."
    ),
    dtype: Dtype = typer.Option(Dtype.auto, case_sensitive=False, help="auto: float32 on CPU, bfloat16 on a GPU."),
    placement: str = typer.Option(
        None, help=f"Latent: {PLACEMENT_HELP} Default: the projector's stored one; another is refused."
    ),
    force_projector: bool = typer.Option(
        False, "--force-projector", help="Latent: use a projector trained for another tokenizer anyway."
    ),
    device: str = typer.Option("auto", help=DEVICE_HELP, autocompletion=complete_device),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Answer QUESTION and print the plan, the answer and the token accounting."""
    if not question.strip():
        raise DataError("the question is empty")
    check_answer_type(answer_type)
    run_device = resolve_device(device)
    spec = build_spec(
        pipeline=pipeline.value, planner=planner, executor=executor, projector=projector, planner_kind=planner_kind,
        executor_kind=executor_kind, gen_length=gen_length, steps=steps, block_length=block_length,
        threshold=threshold, cache=None if cache is None else cache.value, denoise_fraction=denoise_fraction,
        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, chain_of_thought=chain_of_thought,
        latent_noise=latent_noise, prompts=prompts, dtype=dtype.value, device=run_device,
        system_prompt=system_prompt, no_system_turn=no_system_turn, force_projector=force_projector,
        placement=placement,
    )  # fmt: skip
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
