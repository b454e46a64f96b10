"""``darm train-projector``: gather question/answer pairs, cache the planner's latents (stage 1), train the projector
(stage 2) into ``OUT/projector/``.

Both stages resume: rerunning the same command reuses every cached latent and continues from the latest checkpoint.
The latents are keyed by the planner's weights (their fingerprint, not their path) and the run by both models'
weights, checked before any model loads: a resume after either model's weights changed is refused. A second run on
the same ``--out`` waits for the first (a lock file), then reuses what it made.
Under ``accelerate launch -m latent_darm.cli.app train-projector …`` stage 1 splits the questions across processes
and stage 2 trains data-parallel. Training questions are checked first against every evaluation set ``darm eval``
would load with the same data directory (local files, else the hub), and training is refused when one cannot be
loaded (the authors' code trained on the questions it evaluated on); ``--no-overlap-check`` skips the check.

This module checks the options and gathers the data; the two stages are
:func:`~latent_darm.training.projector_pipeline.run_projector_pipeline`, which the toy demo runs too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from latent_darm.cli.choices import Cache, Dtype, TrainDevice
from latent_darm.cli.common import (
    PLACEMENT_HELP,
    cache_dir_path,
    check_output_dir,
    console,
    output_path,
    resolve_device,
    seed_callback,
)
from latent_darm.cli.options import with_option_groups
from latent_darm.errors import CheckpointError, ConfigError, DataError
from latent_darm.evaluation.benchmarks import (
    DATA_ENV,
    HubUnreachableError,
    benchmark_names,
    get_benchmark,
    load_benchmark,
    load_training_split,
    resolve_data_dir,
)
from latent_darm.extras import require
from latent_darm.grading import check_answer_type
from latent_darm.pipelines.builder import check_placement, check_positive
from latent_darm.training.data import (
    TrainingExample,
    check_no_overlap,
    dedupe,
    example_id,
    examples_from_jsonl,
    paper_preset,
    split_held_out,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from latent_darm.sampling import SamplerConfig
    from latent_darm.training.projector_config import ProjectorTrainingConfig
    from latent_darm.training.projector_pipeline import ProjectorPipelineOutcome, ProjectorPipelineSettings

PRESETS = ("paper",)
LOCK_FILE = ".run.lock"  # not the latent cache's .lock: --cache-dir may be --out itself


def check_models(planner: str, executor: str) -> dict[str, str]:
    """Before any model loads (and before stage 1 caches every latent): both references name a checkpoint (the
    executor's weight files are opened too); returns their weights' fingerprints, which key the run."""
    from latent_darm.models.gguf import find_gguf
    from latent_darm.models.hub import resolve_checkpoint
    from latent_darm.models.safetensors_files import checked_weight_files
    from latent_darm.training.latent_cache import weights_id

    planner_dir = resolve_checkpoint(planner, "--planner")
    if not (planner_dir / "config.json").is_file():
        raise CheckpointError(f"--planner {planner_dir}: no config.json")
    if find_gguf(executor) is None:
        executor_dir = resolve_checkpoint(executor, "--executor")
        if not (executor_dir / "config.json").is_file():
            raise CheckpointError(f"--executor {executor_dir}: no config.json")
        checked_weight_files(executor_dir)
    return {"planner": weights_id(planner), "executor": weights_id(executor)}


def gather_examples(
    data: list[Path],
    question_field: str,
    target_field: str,
    answer_type: str,
    benchmarks: list[str],
    data_dir: Path | None,
    preset: str | None,
    preset_per_source: int,
    seed: int,
) -> list[TrainingExample]:
    """Every training pair from the JSONL files, the benchmarks' train splits and the preset, deduplicated."""
    if not data and not benchmarks and preset is None:
        raise DataError("no training data: give --data FILE.jsonl, --benchmark-train NAME or --preset paper")
    examples: list[TrainingExample] = []
    for path in data:
        examples += examples_from_jsonl(
            path,
            question_field=question_field,
            target_field=target_field,
            answer_type=answer_type,  # type: ignore[arg-type]
        )
    for name in benchmarks:
        examples += [
            TrainingExample(example_id(name, e.question), e.question, e.gold, e.answer_type, name)
            for e in load_training_split(name, data_dir=data_dir)
        ]
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        examples += paper_preset(per_source=preset_per_source, seed=seed)
    return dedupe(examples)


def evaluation_sets(names: str | None, data_dir: Path | None) -> dict[str, list[str]]:
    """Questions of the evaluation sets to keep disjoint from training: the named ones, else every registered
    benchmark, each loaded as ``darm eval`` would load it with the same data directory (its local test file, else
    the hub). One that cannot be loaded cannot be checked, so training is refused, naming it and the ways out."""
    root = resolve_data_dir(data_dir)
    sets: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    unreachable: str | None = None  # once the hub is unreachable, the other hub sets are not tried (each try
    # waits through the hub client's retries, about half a minute)
    for name in _split(names) if names else benchmark_names():
        if unreachable is not None and root is None and get_benchmark(name).loader is None:
            failed[name] = unreachable
            continue
        try:
            sets[name] = [e.question for e in load_benchmark(name, data_dir=root)]
        except (DataError, OSError) as exc:
            if names:
                raise
            failed[name] = str(exc)
            if isinstance(exc, HubUnreachableError):
                unreachable = f"not tried: the hub was unreachable ({exc})"
    if failed:
        first = next(iter(failed))
        raise DataError(
            f"cannot check the training questions against evaluation set{'s' if len(failed) > 1 else ''} "
            f"{', '.join(failed)} ({failed[first]}); give --data-dir with their test files, name the sets you will "
            "evaluate on with --exclude-benchmarks, or pass --no-overlap-check"
        )
    return sets


@dataclass(frozen=True)
class TrainProjectorOptions:
    """The options of ``darm train-projector`` (an option group: see :mod:`latent_darm.cli.options`)."""

    planner: str = typer.Option(..., help="Planner checkpoint (LLaDA, Dream, …): directory or Hugging Face id.")
    executor: str = typer.Option(..., help="Executor (causal LM) checkpoint: directory or Hugging Face id.")
    out: Path = typer.Option(
        ..., parser=output_path, metavar="<path>", help="Run directory (rerun the same command to resume)."
    )
    data: list[Path] = typer.Option(None, "--data", help="JSONL file of training pairs (repeatable).")
    question_field: str = typer.Option("question", help="--data: field holding the question.")
    target_field: str = typer.Option("answer", help="--data: field holding the gold answer (a string or number).")
    answer_type: str = typer.Option("math", help="--data: math | integer | mc.")
    benchmark_train: list[str] = typer.Option(
        None,
        help="Registered benchmark whose TRAIN split is training data (repeatable): <data-dir>/<name>/train.jsonl, "
        "else the hub's train split; a benchmark without one is refused.",
    )
    preset: str = typer.Option(
        None,
        help="paper: ARC-Easy, ARC-Challenge and DART-1…5 from the hub. The DART pool is also where dart1…5 are "
        "evaluated from the hub, so the overlap check refuses it unless DART-k is evaluated on local MATH test files.",
    )
    preset_per_source: int = typer.Option(5000, help="--preset: questions per source.")
    held_out_per_source: int = typer.Option(10, help="Validation questions held out per source.")
    data_dir: Path = typer.Option(None, envvar=DATA_ENV, help="Folder of <benchmark>/test.jsonl files.")
    exclude_benchmarks: str = typer.Option(
        None,
        help="Evaluation sets training must not overlap, comma-separated (default: every registered benchmark, "
        "loaded as darm eval would: local test file with a data dir, else the hub; one that cannot load refuses).",
    )
    drop_overlap: bool = typer.Option(False, "--drop-overlap", help="Drop overlapping questions instead of refusing.")
    no_overlap_check: bool = typer.Option(
        False, "--no-overlap-check", help="Skip the train/test overlap check (you vouch for the data)."
    )
    cache_dir: Path = typer.Option(
        None, parser=cache_dir_path, metavar="<path>", help="Latent cache (default OUT/latents)."
    )
    gen_length: int = typer.Option(64, help="Plan length L (positions whose latents the projector reads).")
    steps: int = typer.Option(None, help="Denoising steps (default: gen-length).")
    block_length: int = typer.Option(
        None, help="Semi-autoregressive block length (LLaDA only, default 32; Dream denoises the whole canvas)."
    )
    latent_layer: int = typer.Option(-1, help="Planner layer of the latents (-1: after the final norm).")
    latent_rows: str = typer.Option(
        "plan",
        help="Shifted planners (Dream): latents are the rows at the plan positions (plan) or the rows that "
        "predicted them, one to the left (predictor). Stored with the projector; LLaDA: both are the same rows.",
    )
    denoise_fraction: float = typer.Option(1.0, help="Take latents after this share of the denoising steps.")
    threshold: float = typer.Option(None, help="Planner fast mode: confidence threshold τ.")
    cache: Cache = typer.Option(Cache.none, help="Planner fast mode: block KV cache.")
    plan_batch_size: int = typer.Option(8, help="Stage 1: questions per planner batch.")
    architecture: str = typer.Option(
        "mlp2_gelu_rmsnorm", help="mlp2_gelu_rmsnorm | mlp3_gelu_rmsnorm | linear | mlp2x_gelu."
    )
    hidden_dim: int = typer.Option(1024, help="Projector hidden width.")
    placement: str = typer.Option("prefix", help=PLACEMENT_HELP + " Stored with the projector.")
    init: str = typer.Option(
        "random",
        help="random (Xavier) | lstsq: seed the projector with the closed-form ridge least-squares map from the "
        "training latents to the executor's embeddings of the decoded plan tokens, position by position "
        "(linear, mlp2_gelu_rmsnorm, mlp2x_gelu; see latent_darm.training.projector_lstsq). With --max-steps 0 the "
        "map is the projector, training-free.",
    )
    ridge: float = typer.Option(1e-3, help="--init lstsq: ridge penalty (0: plain least squares).")
    lr: float = typer.Option(3e-4, help="Projector learning rate.")
    weight_decay: float = typer.Option(1e-3, help="AdamW weight decay.")
    warmup_steps: int = typer.Option(300, help="Linear warm-up steps before the cosine decay.")
    epochs: int = typer.Option(3, help="Passes over the training data.")
    batch_size: int = typer.Option(8, help="Micro-batch per process (effective batch: × --grad-accum × processes).")
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps.")
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps.")
    eval_every: int = typer.Option(500, help="Validate (held-out loss and accuracy) every N steps.")
    save_every: int = typer.Option(500, help="Checkpoint every N steps.")
    seed: int = typer.Option(
        0, callback=seed_callback, help="Seed for the held-out split, the initial weights and the data order."
    )
    latent_noise: float = typer.Option(0.0, help="Noised-latents control: Gaussian noise relative to latent RMS.")
    lora: bool = typer.Option(False, "--lora/--no-lora", help="Also train LoRA (r 8, α 32) on the executor.")
    lora_lr: float = typer.Option(5e-4, help="LoRA learning rate.")
    mixed_precision: str = typer.Option("auto", help="auto (bf16 on CUDA, none on CPU) | no | bf16.")
    max_new_tokens: int = typer.Option(64, help="Answer budget of the held-out accuracy check.")
    prompts: Path = typer.Option(None, help="JSON/YAML file overriding prompt templates (use it at eval too).")
    dtype: Dtype = typer.Option(Dtype.auto, case_sensitive=False, help="auto: float32 on CPU, bfloat16 on a GPU.")
    device: TrainDevice = typer.Option(TrainDevice.auto, help="Under accelerate, auto is each process's GPU.")
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr.")


INITS = ("random", "lstsq")


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def check_options(o: TrainProjectorOptions) -> None:
    """Every option that can be checked without data or a model, before anything is written."""
    require("matplotlib", "darm train-projector (its training curve)")
    if o.lora:
        require("peft", "--lora")
    check_answer_type(o.answer_type)
    check_placement(o.placement)
    if o.held_out_per_source < 0:
        raise ConfigError(f"--held-out-per-source must be >= 0, got {o.held_out_per_source}")
    if o.plan_batch_size < 1:
        raise ConfigError(f"--plan-batch-size must be >= 1, got {o.plan_batch_size}")
    if o.init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}; got {o.init!r}")
    if not math.isfinite(o.ridge) or o.ridge < 0:  # nan passes every comparison and gives a NaN projector
        raise ConfigError(f"--ridge must be a finite number >= 0, got {o.ridge}")
    for name, value in (("steps", o.steps), ("block-length", o.block_length), ("max-steps", o.max_steps)):
        if not (training_free(o) and name == "max-steps"):
            check_positive(name, value)
    if o.device != TrainDevice.auto:
        resolve_device(o.device.value)  # --device cuda on a machine without CUDA is refused, not run on the CPU
    check_output_dir(o.out)
    check_output_dir(cache_root(o), "--cache-dir" if o.cache_dir is not None else "--out")


def training_free(o: TrainProjectorOptions) -> bool:
    """``--init lstsq --max-steps 0``: the map alone (0 steps is a value here, not a mistake)."""
    return o.init == "lstsq" and o.max_steps == 0


def cache_root(o: TrainProjectorOptions) -> Path:
    return o.cache_dir or o.out / "latents"


def sampler_options(o: TrainProjectorOptions) -> dict[str, Any]:
    """The planner's sampler settings for stage 1, checked against its family when it is a local checkpoint."""
    from latent_darm.models.family import local_family, sampler_config
    from latent_darm.training.projector_pipeline import family_options

    family = local_family(o.planner)
    blockless = family is not None and not family.uses_blocks
    options: dict[str, Any] = {
        "gen_length": o.gen_length,
        "block_length": o.block_length if blockless else min(o.block_length or 32, o.gen_length),
        "steps": o.gen_length if o.steps is None else o.steps,
        "threshold": o.threshold,
        "cache": o.cache.value,
        "hidden_layer": o.latent_layer,
        "denoise_fraction": o.denoise_fraction,
        "latent_rows": o.latent_rows,
    }
    # Built only to check them: a setting the family refuses fails here, before any data or model loads. The
    # pipeline completes them with the loaded planner's family (a hub planner's is known only then).
    sampler_config(family, **family_options(family, options))
    return options


def training_config(o: TrainProjectorOptions) -> ProjectorTrainingConfig:
    """The trainer's settings (checked), refused when ``--out`` holds a run made with others."""
    from latent_darm.projector.model import ProjectorConfig
    from latent_darm.training.projector_run import RUN_FILE
    from latent_darm.training.projector_trainer import ProjectorTrainingConfig, check_settings

    ProjectorConfig(
        1, 1, architecture=o.architecture, hidden_dim=o.hidden_dim, placement=o.placement, latent_rows=o.latent_rows
    )
    config = ProjectorTrainingConfig(
        lr=o.lr,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_steps,
        epochs=o.epochs,
        batch_size=o.batch_size,
        grad_accum=o.grad_accum,
        max_steps=None if training_free(o) else o.max_steps,
        mixed_precision=o.mixed_precision,
        eval_every=o.eval_every,
        save_every=o.save_every,
        max_new_tokens=o.max_new_tokens,
        seed=o.seed,
        latent_noise=o.latent_noise,
        lora=o.lora,
        lora_lr=o.lora_lr,
    )
    if training_free(o) and (o.out / RUN_FILE).exists():  # the map never replaces a trained run's projector
        raise ConfigError(f"--out {o.out} holds a trained projector run; give --init lstsq --max-steps 0 its own --out")
    check_settings(o.out, config)  # a directory of other settings is refused before any work
    return config


def training_data(
    o: TrainProjectorOptions,
) -> tuple[list[TrainingExample], list[TrainingExample], list[TrainingExample], dict[str, list[str]] | None]:
    """(every example, train, held out, the evaluation sets they were kept disjoint from; None: not checked)."""
    from latent_darm.pipelines.prompts import load_templates

    load_templates(o.prompts)  # a bad prompt file fails before the data loads
    pools = list(o.benchmark_train or [])
    examples = gather_examples(
        list(o.data or []),
        o.question_field,
        o.target_field,
        o.answer_type,
        pools,
        o.data_dir,
        o.preset,
        o.preset_per_source,
        o.seed,
    )
    evaluation = None if o.no_overlap_check else evaluation_sets(o.exclude_benchmarks, o.data_dir)
    if evaluation is not None:
        examples = check_no_overlap(examples, evaluation, drop=o.drop_overlap)
    train, held_out = split_held_out(examples, per_source=o.held_out_per_source, seed=o.seed)
    if not train:
        raise DataError("no training examples left after holding out validation questions")
    return examples, train, held_out, evaluation


def pipeline_settings(
    o: TrainProjectorOptions,
    sampler: dict[str, Any],
    config: ProjectorTrainingConfig,
    examples: list[TrainingExample],
    evaluation: dict[str, list[str]] | None,
) -> ProjectorPipelineSettings:
    """The two stages' settings: one latent source (``--cache-dir``), the provenance the projector records."""
    from latent_darm.training.projector_pipeline import LatentSource, ProjectorPipelineSettings

    def provenance(samplers: Sequence[SamplerConfig]) -> dict[str, Any]:
        return {
            "planner": o.planner,
            "executor": o.executor,
            "sampler": samplers[0].to_dict(),
            "latent_cache": str(cache_root(o)),
            "data": sorted({e.source for e in examples}),
            "kept_disjoint_from": None if evaluation is None else sorted(evaluation),
            "prompts": None if o.prompts is None else str(o.prompts),
            "init": o.init if o.init == "random" else {"init": o.init, "ridge": o.ridge},
        }

    return ProjectorPipelineSettings(
        planner=o.planner,
        executor=o.executor,
        out=o.out,
        sources=(LatentSource("", sampler, cache_root(o)),),
        training=config,
        plan_length=o.gen_length,
        architecture=o.architecture,
        hidden_dim=o.hidden_dim,
        latent_layer=o.latent_layer,
        latent_rows=o.latent_rows,
        placement=o.placement,
        init=o.init,
        ridge=o.ridge,
        training_free=training_free(o),
        plan_batch_size=o.plan_batch_size,
        dtype=o.dtype.value,
        prompts=None if o.prompts is None else str(o.prompts),
        provenance=provenance,
        progress=o.progress,
    )


def print_outcome(outcome: ProjectorPipelineOutcome) -> None:
    """The projector's place and, after training, the best held-out result and the summary as JSON on stdout."""
    summary = outcome.summary
    if summary is None:
        console.print(f"projector → {outcome.projector_dir} (--init lstsq, 0 steps: no training)", highlight=False)
        return
    best = (
        f"best held-out loss {summary.best_val_loss:.4f} at step {summary.best_step}, accuracy "
        f"{summary.final_val_accuracy:.1%} at the end"
        if summary.best_val_loss is not None and summary.final_val_accuracy is not None
        else "no held-out set: final weights"
    )
    console.print(
        f"projector → {summary.projector_dir} ({summary.steps} steps, {best}, {summary.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(json.dumps(summary.to_dict()))


@with_option_groups
def train_projector_command(options: TrainProjectorOptions = ...) -> None:  # type: ignore[assignment]
    """Train the latent projector between PLANNER and EXECUTOR; the best checkpoint lands in OUT/projector."""
    from latent_darm.training.latent_cache import LatentCache
    from latent_darm.training.projector_pipeline import run_projector_pipeline
    from latent_darm.training.projector_trainer import check_settings, make_accelerator

    o = options
    check_options(o)  # everything that can be checked without a model, first
    sampler = sampler_options(o)
    config = training_config(o)
    examples, train, held_out, evaluation = training_data(o)
    # Both models' files, before any model loads (the executor's would otherwise be read only after stage 1), and
    # their weights against those the latents and the run were made with.
    weights = check_models(o.planner, o.executor)
    LatentCache.check_planner(cache_root(o), weights["planner"])
    check_settings(o.out, config, weights)
    settings = pipeline_settings(o, sampler, config, examples, evaluation)

    from filelock import FileLock  # here: `darm --help` imports this module

    accelerator = make_accelerator(config, cpu=True if o.device == "cpu" else None)
    # One process at a time per run directory (a second waits, then finds the work done and reuses it); the ranks
    # of one multi-process run share the directory and do not take the lock.
    lock = FileLock(o.out / LOCK_FILE) if accelerator.num_processes == 1 else contextlib.nullcontext()
    with lock:
        main = accelerator.is_main_process
        if main:
            checked = "NOT CHECKED (--no-overlap-check)" if evaluation is None else ", ".join(sorted(evaluation))
            console.print(
                f"{len(train)} training and {len(held_out)} held-out questions; kept disjoint from: {checked}",
                highlight=False,
                soft_wrap=True,
            )
        log = functools.partial(console.print, highlight=False)
        outcome = run_projector_pipeline(settings, train + held_out, train, held_out, accelerator=accelerator, log=log)
        if main:
            print_outcome(outcome)
