"""``darm eval``: run a pipeline on a benchmark into a resumable results directory.

The command turns its options into a pipeline spec (:class:`~latent_darm.pipelines.spec.PipelineSpec`), stores its
JSON layout in ``config.json`` and hands that to ``build_pipeline``;
``darm diagnose`` later derives its swapped pipelines from the same stored spec. The device is added only when
building: it is not part of the configuration, so a run can resume on another GPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.app import app
from latent_darm.cli.choices import DEVICE_HELP, Cache, Dtype, PipelineKind, complete_benchmark, complete_device
from latent_darm.cli.common import (
    LOOKAHEAD_CHOICE_HELP,
    LOOKAHEAD_HELP,
    PLACEMENT_HELP,
    check_output_dir,
    check_placement,
    check_positive,
    console,
    lookahead_options,
    output_path,
    resolve_device,
    resolve_dtype,
    seed_callback,
)
from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import DATA_ENV, PAPER_PROTOCOL, benchmark_names, load_benchmark
from latent_darm.evaluation.runner import (
    EvalSummary,
    accelerate_state,
    check_run_config,
    evaluate,
    examples_fingerprint,
)
from latent_darm.models.fingerprint import reference_fingerprint
from latent_darm.pipelines.spec import (
    AutoregressiveRole,
    DiffusionRole,
    PipelineSpec,
    ProjectorSpec,
    Role,
    SamplerSpec,
    TemplatesSpec,
)

PIPELINES = ("arm", "ddlm", "text", "latent")
WRITER_KINDS = ("ddlm", "arm")
# Plan lengths of the paper: 64 latent positions; 256 tokens (8 blocks of 32) for a text plan or a DDLM answer.
DEFAULT_GEN_LENGTH = {"latent": 64, "text": 256, "ddlm": 256}
DEFAULT_BLOCK_LENGTH = 32  # LLaDA's; families without blocks (Dream) ignore it
# Answer budgets: a direct answer is a short \boxed{}; chain of thought more. The paper's latent executor writes ~5
# tokens, but a real instruct model phrases it ("The answer is \boxed{12}."): 16 cut such answers, so 64.
DEFAULT_MAX_NEW_TOKENS = {"latent": 64, "text": 32, "arm": 32, "cot": 1024}


def diffusion_role(
    model: str,
    gen_length: int,
    steps: int,
    block_length: int | None,
    threshold: float | None,
    cache: str,
    lookahead: int | None = None,
    lookahead_choice: str | None = None,
) -> DiffusionRole:
    """A DDLM writer's settings, checked now (so a bad setting fails before any model loads) against the planner
    family when ``model`` is a local checkpoint; ``block_length`` None = the family's default (LLaDA: 32)."""
    from latent_darm.models.family import local_family, sampler_config, settings_for

    family = local_family(model)
    settings = dict(gen_length=gen_length, steps=steps, threshold=threshold, cache=cache, lookahead=lookahead)
    settings |= dict(lookahead_choice=lookahead_choice)
    if family is not None and not family.uses_blocks:
        sampler_config(family, block_length=block_length, **settings_for(family, settings))
        block_length = None
    else:
        block_length = DEFAULT_BLOCK_LENGTH if block_length is None else block_length
    # lookahead is stored only when set, so the specs of earlier runs (and their resumption) are unchanged.
    sampler = SamplerSpec(**settings, block_length=block_length)
    return DiffusionRole(model, sampler)


def latent_planner_role(model: str, projector: str, explicit: dict[str, Any]) -> tuple[DiffusionRole, dict[str, Any]]:
    """The latent planner's settings: those given explicitly, the rest as the projector was trained with (checked
    now), and the explicit ones that differ from its training."""
    from latent_darm.projector.model import Projector, planner_role_for_projector

    given = {"kind": "ddlm", "model": model, **{k: v for k, v in explicit.items() if v is not None}}
    role, differs = planner_role_for_projector(given, Projector.stored_config(projector))
    return DiffusionRole.from_dict(role, "planner."), differs


def check_projector_placement(projector: str | None, placement: str | None) -> None:
    """``--placement`` only confirms the projector's stored placement: a projector reads its soft tokens where it
    was trained to, so asking for another is refused (one line) instead of silently evaluating a mismatch."""
    from latent_darm.projector.model import Projector

    if placement is None or projector is None:
        return
    stored = Projector.stored_config(projector).placement
    if placement != stored:
        raise ConfigError(
            f"--placement {placement} differs from the projector's stored placement {stored!r} (it was trained "
            f"that way; train another projector with --placement {placement})"
        )


def autoregressive_role(model: str, max_new_tokens: int, repetition_penalty: float) -> AutoregressiveRole:
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not math.isfinite(repetition_penalty) or repetition_penalty <= 0:
        raise ConfigError(f"--repetition-penalty must be a finite number > 0, got {repetition_penalty}")
    return AutoregressiveRole(model, max_new_tokens, repetition_penalty)


def _unused(pipeline: str, **options: Any) -> None:
    for name, value in options.items():
        if value not in (None, False, 0.0):
            raise ConfigError(f"--{name.replace('_', '-')} is not used by --pipeline {pipeline}")


def _check_options(pipeline: str, options: dict[str, Any]) -> None:
    """Refuse a choice outside the lists and an option the pipeline does not read, naming the flag."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"--pipeline must be one of {', '.join(PIPELINES)}; got {pipeline!r}")
    for name in ("planner_kind", "executor_kind"):
        value = options[name]
        if value is not None and value not in WRITER_KINDS:
            raise ConfigError(f"--{name.replace('_', '-')} must be ddlm or arm; got {value!r}")
    unused = {
        "planner_kind": pipeline != "text",
        "executor_kind": pipeline != "text",
        "projector": pipeline != "latent",
        "latent_noise": pipeline != "latent",
        "denoise_fraction": pipeline != "latent",
        "force_projector": pipeline != "latent",
        "placement": pipeline != "latent",
        "chain_of_thought": pipeline in ("text", "latent"),
        "planner": pipeline == "arm",
    }
    _unused(pipeline, **{name: options[name] for name, refused in unused.items() if refused})
    check_placement(options["placement"])
    if not math.isfinite(options["latent_noise"]) or options["latent_noise"] < 0:
        raise ConfigError(f"--latent-noise must be a finite number >= 0, got {options['latent_noise']}")
    if pipeline == "ddlm" and options["planner"] and options["executor"]:
        raise ConfigError("--pipeline ddlm runs one model: give --executor (or --planner), not both")


def pipeline_spec(
    *,
    pipeline: str,
    planner: str | None = None,
    executor: str | None = None,
    projector: str | None = None,
    planner_kind: str | None = None,
    executor_kind: str | None = None,
    gen_length: int | None = None,
    steps: int | None = None,
    block_length: int | None = None,
    threshold: float | None = None,
    cache: str | None = None,
    lookahead: str | int | None = None,
    lookahead_choice: str | None = None,
    denoise_fraction: float | None = None,
    max_new_tokens: int | None = None,
    repetition_penalty: float = 1.0,
    chain_of_thought: bool = False,
    latent_noise: float = 0.0,
    prompts: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    system_prompt: str | None = None,
    no_system_turn: bool = False,
    force_projector: bool = False,
    placement: str | None = None,
) -> PipelineSpec:
    """The pipeline spec for ``build_pipeline`` from the command's options; a misuse is a one-line ConfigError.
    Sampler options left as None mean: for the latent planner, what the projector was trained with; elsewhere the
    defaults (blocks of 32, no cache, steps = gen-length). ``device`` (not stored: a run may resume elsewhere) only
    resolves ``dtype`` auto. ``system_prompt`` / ``no_system_turn`` override the templates' system turn (default: an
    empty one)."""
    _check_options(pipeline, locals())
    # 0 is a value, not "use the default": refuse it here instead of letting `x or default` swallow it.
    for name, value in (("gen-length", gen_length), ("steps", steps), ("max-new-tokens", max_new_tokens)):
        check_positive(name, value)
    check_positive("block-length", block_length)
    from latent_darm.models.llada.sampler_config import parse_lookahead

    held = parse_lookahead(lookahead)
    for name, value in (("lookahead", held), ("lookahead-choice", lookahead_choice)):
        if pipeline == "arm" and value is not None:  # 0 is a count here, not "unset"
            raise ConfigError(f"--{name} is not used by --pipeline arm")
    plan_length = DEFAULT_GEN_LENGTH.get(pipeline, 256) if gen_length is None else gen_length
    budget = DEFAULT_MAX_NEW_TOKENS.get("cot" if chain_of_thought else pipeline, 32)
    answer_budget = budget if max_new_tokens is None else max_new_tokens
    differs: dict[str, Any] = {}

    def role(kind: str, model: str, length: int, block: int | None, answer: bool = False) -> Role:
        if kind == "ddlm":
            # A diffusion executor's answer canvas takes the planner's --steps at most one per position: LLaDA's
            # schedule gives the extra steps no token to reveal (same tokens, wasted passes), so they are capped.
            n = length if steps is None else (min(steps, length) if answer else steps)
            return diffusion_role(model, length, n, block, threshold, cache or "none", held, lookahead_choice)
        return autoregressive_role(model, length, repetition_penalty)

    planner_role: Role | None = None
    if pipeline in ("arm", "ddlm"):
        model = _need(executor or (planner if pipeline == "ddlm" else None), "executor", pipeline)
        executor_role = role(pipeline, model, plan_length if pipeline == "ddlm" else answer_budget, block_length)
    else:
        planner_model, executor_model = _need(planner, "planner", pipeline), _need(executor, "executor", pipeline)
        if pipeline == "latent":
            explicit = dict(gen_length=gen_length, steps=steps, block_length=block_length, threshold=threshold)
            explicit |= dict(cache=cache, denoise_fraction=denoise_fraction, lookahead=held)
            explicit |= dict(lookahead_choice=lookahead_choice)
            planner_role, differs = latent_planner_role(
                planner_model, _need(projector, "projector", pipeline), explicit
            )
            check_projector_placement(projector, placement)
        else:
            planner_role = role(planner_kind or "ddlm", planner_model, plan_length, block_length)
        # A diffusion executor writes a canvas of the answer budget, in blocks of --block-length when it fits.
        answer_block = block_length if answer_budget % (block_length or DEFAULT_BLOCK_LENGTH) == 0 else answer_budget
        executor_role = role(executor_kind or "arm", executor_model, answer_budget, answer_block, answer=True)
    templates = TemplatesSpec(prompts)
    if prompts is not None:
        templates.load()  # a bad prompt file fails now, not after the models load
    if no_system_turn and system_prompt is not None:
        raise ConfigError("give --system-prompt or --no-system-turn, not both")
    if no_system_turn or system_prompt is not None:
        templates = replace(templates, system_prompt=None if no_system_turn else system_prompt, override_system=True)
    return PipelineSpec(
        kind=pipeline,
        executor=executor_role,
        planner=planner_role,
        projector=ProjectorSpec(projector, latent_noise, force=force_projector) if projector else None,
        chain_of_thought=chain_of_thought,
        templates=templates,
        dtype=resolve_dtype(dtype, device),
        sampler_differs_from_training=differs or None,
    )


def build_spec(**options: Any) -> dict[str, Any]:
    """:func:`pipeline_spec` in the JSON layout ``config.json`` stores and ``build_pipeline`` reads."""
    return pipeline_spec(**options).to_dict()


def _need(value: str | None, name: str, pipeline: str) -> str:
    if not value:
        raise ConfigError(f"--pipeline {pipeline} needs --{name}")
    return value


def subset(limit: int | None, seed: int | None, paper_protocol: bool) -> dict[str, int | None]:
    """``--paper-protocol`` is the preset seed 42, first 200; it does not mix with --limit/--seed."""
    if paper_protocol:
        if limit is not None or seed is not None:
            raise ConfigError("--paper-protocol fixes --limit and --seed; give one or the other")
        return {"limit": PAPER_PROTOCOL["limit"], "seed": PAPER_PROTOCOL["seed"]}
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    return {"limit": limit, "seed": seed}


def weights_of(spec: dict[str, Any]) -> dict[str, str]:
    """{role: weights fingerprint} of every model the spec names, recorded so a resume with other weights fails."""
    references = {role: (spec.get(role) or {}).get("model") for role in ("planner", "executor")}
    references["projector"] = spec.get("projector")
    fingerprints = {role: reference_fingerprint(ref) for role, ref in references.items() if ref}
    return {role: value for role, value in fingerprints.items() if value is not None}


def runtime_device(device: str) -> str:
    """Under ``accelerate launch`` with several processes, ``auto`` means this process's own GPU."""
    if device == "auto":
        state = accelerate_state()
        if state.num_processes > 1:
            return str(state.device)
    return resolve_device(device)


def summary_line(benchmark: str, summary: EvalSummary, out: Path) -> str:
    s = summary
    return (
        f"{benchmark}: accuracy {s.accuracy:.1%} ({s.correct}/{s.n}), tokens/question planner "
        f"{s.mean_planner_tokens:.1f} + executor {s.mean_executor_tokens:.1f} = {s.mean_total_tokens:.1f}, "
        f"{s.seconds_per_question:.2f} s/question, truncated {s.truncation_rate:.1%}, {s.computed} new → {out}"
    )


@app.command("eval")
def eval_command(
    pipeline: PipelineKind = typer.Option(..., help="Which pipeline to run."),
    planner: str = typer.Option(None, help="Planner checkpoint (text, latent): directory or Hugging Face id."),
    executor: str = typer.Option(None, help="Executor checkpoint: the model that writes the answer."),
    projector: str = typer.Option(None, help="Projector checkpoint (latent)."),
    planner_kind: str = typer.Option(None, help="Text pairing: ddlm (default) | arm."),
    executor_kind: str = typer.Option(None, help="Text pairing: arm (default) | ddlm."),
    benchmark: str = typer.Option(
        ...,
        help=f"Benchmark name: {', '.join(benchmark_names())}.",
        autocompletion=complete_benchmark,
    ),
    data_dir: Path = typer.Option(
        None, envvar=DATA_ENV, help="Folder of <benchmark>/test.jsonl files (else the Hugging Face hub)."
    ),
    limit: int = typer.Option(None, help="Evaluate the first N examples (after the --seed shuffle)."),
    seed: int = typer.Option(None, callback=seed_callback, help="Shuffle the examples with this seed before --limit."),
    paper_protocol: bool = typer.Option(False, help="The paper's subset: shuffle with seed 42, first 200."),
    out: Path = typer.Option(
        ..., parser=output_path, metavar="<path>", help="Results directory (created; rerun the same command to resume)."
    ),
    batch_size: int = typer.Option(8, help="Questions per pipeline call."),
    gen_length: int = typer.Option(None, help="Plan length (default: latent, the projector's; text / ddlm 256)."),
    steps: int = typer.Option(
        None, help="Denoising steps (default: latent, the projector's training setting; else gen-length)."
    ),
    block_length: int = typer.Option(
        None, help="Block length (LLaDA only; default: latent, as the projector was trained; else 32)."
    ),
    threshold: float = typer.Option(None, help="Fast mode: reveal every position with confidence ≥ τ."),
    cache: Cache = typer.Option(None, help="Fast mode: block KV cache (default: latent, as trained; else none)."),
    denoise_fraction: float = typer.Option(
        None, help="Take plan latents after this share of the denoising steps (latent; default: as trained, else 1)."
    ),
    lookahead: str = typer.Option(None, metavar="N|all", help="DDLM writer: " + LOOKAHEAD_HELP),
    lookahead_choice: str = typer.Option(None, help=LOOKAHEAD_CHOICE_HELP),
    latent_tokens: str = typer.Option(None, hidden=True, help="Deprecated name of --lookahead."),
    latent_choice: str = typer.Option(None, hidden=True, help="Deprecated name of --lookahead-choice."),
    max_new_tokens: int = typer.Option(None, help="Answer budget (default 64 latent, 32 direct, 1024 CoT)."),
    repetition_penalty: float = typer.Option(1.0, help="Autoregressive decoding repetition penalty."),
    chain_of_thought: bool = typer.Option(False, "--chain-of-thought", help="arm / ddlm alone: reason first."),
    latent_noise: float = typer.Option(0.0, help="Latent: Gaussian noise relative to the latents' RMS (control)."),
    prompts: Path = typer.Option(None, help="JSON/YAML file overriding prompt templates."),
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
    device: str = typer.Option(
        "auto", help=f"{DEVICE_HELP} Under accelerate, auto is each process's GPU.", autocompletion=complete_device
    ),
    label: str = typer.Option(None, help="Name of this configuration in reports."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Evaluate a pipeline on a benchmark: graded results stream to OUT/results.jsonl; rerun to resume.

    A resume is refused if the settings or any model's weights (fingerprinted in OUT/config.json) changed.
    --gen-length, --steps and --max-new-tokens must be >= 1 when given (0 is refused, not read as the default)."""
    run_device = runtime_device(device)
    held, choice = lookahead_options(lookahead, lookahead_choice, latent_tokens, latent_choice)
    spec = build_spec(
        pipeline=pipeline.value,
        planner=planner,
        executor=executor,
        projector=projector,
        planner_kind=planner_kind,
        executor_kind=executor_kind,
        gen_length=gen_length,
        steps=steps,
        block_length=block_length,
        threshold=threshold,
        cache=None if cache is None else cache.value,
        lookahead=held,
        lookahead_choice=choice,
        denoise_fraction=denoise_fraction,
        max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty,
        chain_of_thought=chain_of_thought,
        latent_noise=latent_noise,
        prompts=None if prompts is None else str(prompts),
        dtype=dtype.value,
        device=run_device,
        system_prompt=system_prompt,
        no_system_turn=no_system_turn,
        force_projector=force_projector,
        placement=placement,
    )
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    check_output_dir(out)
    selection = subset(limit, seed, paper_protocol)
    examples = load_benchmark(benchmark, data_dir=data_dir, **selection)
    if not examples:
        raise DataError(f"benchmark {benchmark!r}: the selection is empty")
    config: dict[str, Any] = {
        "benchmark": benchmark,
        "subset": selection,
        "examples": examples_fingerprint(examples),
        "spec": spec,
        "weights": weights_of(spec),
        "batch_size": batch_size,  # in bfloat16 a row's answer can depend on its batch: a resume must not mix
    }
    if label:
        config["label"] = label
    check_run_config(out, config, partial=True)  # refuse a foreign directory before loading any model
    from latent_darm.pipelines.factory import build_pipeline

    built = build_pipeline({**spec, "device": run_device})
    summary = evaluate(built, examples, out, batch_size=batch_size, config=config, progress=progress)
    if accelerate_state().is_main_process:
        console.print(summary_line(benchmark, summary, out), highlight=False, soft_wrap=True)
        typer.echo(json.dumps({"benchmark": benchmark, "out": str(out), **summary.to_dict()}))
