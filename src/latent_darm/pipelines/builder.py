"""The one place pipeline specs are built: from a command's options (``darm eval``, ``darm solve``, the Python API),
from explicit roles (the toy demo), from a projector's training settings (the latent planner) and from a stored spec
by swapping one role (``darm diagnose``).

Every check that needs no model runs here, so a misuse is a one-line :class:`ConfigError` naming the option before
any model loads; :func:`~latent_darm.pipelines.factory.build_pipeline` then builds what the spec describes. Nothing
here imports torch at module level: the commands import it while ``darm --help`` answers.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from latent_darm.dtypes import resolve_dtype_name
from latent_darm.errors import ConfigError
from latent_darm.pipelines.spec import (
    CHAT_TEMPLATE_MODES,
    AutoregressiveRole,
    DiffusionRole,
    PipelineSpec,
    ProjectorSpec,
    Role,
    SamplerSpec,
    TemplatesSpec,
)

if TYPE_CHECKING:
    from latent_darm.projector.model import ProjectorConfig

PIPELINES = ("arm", "ddlm", "text", "latent")
WRITER_KINDS = ("ddlm", "arm")
# Plan lengths of the paper: 64 latent positions; 256 tokens (8 blocks of 32) for a text plan or a DDLM answer.
DEFAULT_GEN_LENGTH = {"latent": 64, "text": 256, "ddlm": 256}
DEFAULT_BLOCK_LENGTH = 32  # LLaDA's; families without blocks (Dream) ignore it
# Answer budgets: a direct answer is a short \boxed{}; chain of thought more. The paper's latent executor writes ~5
# tokens, but a real instruct model phrases it ("The answer is \boxed{12}."): 16 cut such answers, so 64.
DEFAULT_MAX_NEW_TOKENS = {"latent": 64, "text": 32, "arm": 32, "cot": 1024}


def check_positive(option: str, value: int | None) -> None:
    """An optional count option given as 0 or less is an error (not silently its default)."""
    if value is not None and value < 1:
        raise ConfigError(f"--{option} must be >= 1, got {value}")


def check_placement(value: str | None, option: str = "--placement") -> None:
    """An unknown soft-token placement is a one-line error naming the option (checked before any model loads)."""
    from latent_darm.models.splice import PLACEMENTS

    if value is not None and value not in PLACEMENTS:
        raise ConfigError(f"{option} must be one of {', '.join(PLACEMENTS)}; got {value!r}")


def diffusion_role(
    model: str,
    gen_length: int,
    steps: int,
    block_length: int | None,
    threshold: float | None,
    cache: str,
    lookahead: int | None = None,
    lookahead_choice: str | None = None,
    **extra: Any,
) -> DiffusionRole:
    """A DDLM writer's settings, checked now (so a bad setting fails before any model loads) against the planner
    family when ``model`` is a local checkpoint; ``block_length`` None = the family's default (LLaDA: 32).
    ``extra``: further :class:`SamplerSpec` fields (the toy demo's ``denoise_fraction``), stored as given."""
    from latent_darm.models.family import local_family, sampler_config, settings_for

    family = local_family(model)
    settings = dict(gen_length=gen_length, steps=steps, threshold=threshold, cache=cache, lookahead=lookahead)
    settings |= dict(lookahead_choice=lookahead_choice, **extra)
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
    from latent_darm.projector.model import Projector

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


def with_chat_template(executor: Role, mode: str, pipeline: str) -> Role:
    """The executor role with ``--chat-template`` set; refused where it means nothing (a diffusion executor) or
    breaks the pairing (none with a projector trained on the chat prompt)."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ConfigError(f"--chat-template must be one of {', '.join(CHAT_TEMPLATE_MODES)}; got {mode!r}")
    if mode == "auto":
        return executor
    if not isinstance(executor, AutoregressiveRole):
        raise ConfigError(f"--chat-template {mode} is for an autoregressive (arm) executor; this one is a ddlm")
    if pipeline == "latent" and mode == "none":
        raise ConfigError(
            "--chat-template none is not for --pipeline latent: its projector was trained on the executor's chat prompt"
        )
    return replace(executor, chat_template=mode)


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
    chat_template: str = "auto",
) -> PipelineSpec:
    """The pipeline spec for ``build_pipeline`` from the command's options; a misuse is a one-line ConfigError.
    Sampler options left as None mean: for the latent planner, what the projector was trained with; elsewhere the
    defaults (blocks of 32, no cache, steps = gen-length). ``device`` (not stored: a run may resume elsewhere) only
    resolves ``dtype`` auto. ``system_prompt`` / ``no_system_turn`` override the templates' system turn (default: an
    empty one). ``chat_template`` is the autoregressive executor's mode (auto | required | none)."""
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
    executor_role = with_chat_template(executor_role, chat_template, pipeline)
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
        dtype=resolve_dtype_name(dtype, device),
        sampler_differs_from_training=differs or None,
    )


def build_spec(**options: Any) -> dict[str, Any]:
    """:func:`pipeline_spec` in the JSON layout ``config.json`` stores and ``build_pipeline`` reads."""
    return pipeline_spec(**options).to_dict()


def _need(value: str | None, name: str, pipeline: str) -> str:
    if not value:
        raise ConfigError(f"--pipeline {pipeline} needs --{name}")
    return value


def spec_from_roles(
    kind: str,
    planner: Role | None,
    executor: Role,
    *,
    projector: str | None = None,
    chain_of_thought: bool = False,
    dtype: str = "float32",
) -> dict[str, Any]:
    """A spec in ``config.json``'s layout from roles already made (the toy demo sets each role's lengths itself);
    built-in prompt templates, no latent noise."""
    spec = PipelineSpec(
        kind=kind,
        executor=executor,
        planner=planner,
        projector=None if projector is None else ProjectorSpec(projector),
        chain_of_thought=chain_of_thought,
        dtype=dtype,
    )
    return spec.to_dict()


# ----------------------------------------------------------------------------------------------------------------
# The latent planner: what its projector was trained with
# ----------------------------------------------------------------------------------------------------------------


def planner_role_for_projector(
    role: dict[str, Any], projector: ProjectorConfig
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A latent planner role with every unset (absent or None) sampler setting taken from what ``projector`` was
    trained with, and the settings given explicitly that differ from it (``{key: {"trained": x, "used": y}}``). A
    projector saved before the settings were recorded gets the old defaults for its plan length (steps = plan
    length, blocks of at most 32) and reports no difference."""
    from latent_darm.models.family import renamed_settings

    stored = {k: v for k, v in renamed_settings(projector.planner_sampler).items() if k != "hidden_layer"}
    length = projector.plan_length
    trained = {"gen_length": length, "steps": length, "block_length": min(32, length), **stored}
    filled = {**role, **{k: v for k, v in trained.items() if role.get(k) is None}}
    differs = {k: {"trained": v, "used": filled.get(k)} for k, v in stored.items() if filled.get(k) != v}
    return filled, differs


# ----------------------------------------------------------------------------------------------------------------
# diagnose: a stored spec with one role swapped
# ----------------------------------------------------------------------------------------------------------------

RECORDED_PLANS = "recorded"  # setup Y's plans: read from the run's results


def _as_text_pairing(spec: PipelineSpec, **changes: Any) -> dict[str, Any]:
    """The same spec in text space (no projector, no noise, no chain of thought) with ``changes`` (roles) made."""
    text = replace(spec, kind="text", projector=None, chain_of_thought=False, sampler_differs_from_training=None)
    return replace(text, **changes).to_dict()


def planner_swap_spec(stored: dict[str, Any], ar_planner: str | None = None) -> dict[str, Any] | None:
    """Setup X: an ARM writes the plan (budget: the diffusion plan's length); None when there is no DDLM planner.
    The ARM planner defaults to the run's own (autoregressive) executor model."""
    spec = PipelineSpec.from_dict(stored)
    planner, executor = spec.planner, spec.executor
    if not isinstance(planner, DiffusionRole):
        return None
    model = ar_planner or (executor.model if isinstance(executor, AutoregressiveRole) else None)
    if not model:
        raise ConfigError("setup X needs an autoregressive planner: pass --ar-planner")
    return _as_text_pairing(spec, planner=AutoregressiveRole(model, planner.sampler.gen_length))


def executor_swap_spec(
    stored: dict[str, Any], diffusion_executor: str | None = None, gen_length: int | None = None
) -> dict[str, Any] | None:
    """Setup Y: a DDLM writes the answer from the same plan; None when the executor is not an ARM. The DDLM
    defaults to the run's own (diffusion) planner model; its canvas defaults to the ARM's answer budget, one token
    per step, in the planner's block length when that divides it."""
    spec = PipelineSpec.from_dict(stored)
    planner, executor = spec.planner, spec.executor
    if planner is None or not isinstance(executor, AutoregressiveRole):
        return None
    ddlm_planner = planner.sampler if isinstance(planner, DiffusionRole) else None
    model = diffusion_executor or (planner.model if ddlm_planner is not None else None)
    if not model:
        raise ConfigError("setup Y needs a diffusion executor: pass --diffusion-executor")
    length = executor.max_new_tokens if gen_length is None else gen_length
    if length < 1:
        raise ConfigError(f"--diffusion-gen-length must be >= 1, got {length}")
    block = (ddlm_planner.block_length if ddlm_planner is not None else None) or length
    sampler = SamplerSpec(
        gen_length=length,
        steps=length,
        block_length=block if length % block == 0 else length,
        threshold=None if ddlm_planner is None else ddlm_planner.threshold,
        cache="none" if ddlm_planner is None else ddlm_planner.cache,
    )
    return _as_text_pairing(spec, executor=DiffusionRole(model, sampler), plans=RECORDED_PLANS)
