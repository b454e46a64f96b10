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
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.app import app
from latent_darm.cli.choices import Cache, Dtype, TrainDevice
from latent_darm.cli.common import (
    PLACEMENT_HELP,
    cache_dir_path,
    check_output_dir,
    check_placement,
    check_positive,
    console,
    output_path,
    parse_dtype,
    resolve_device,
    resolve_dtype,
    seed_callback,
)
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
from latent_darm.progress import progress_bar
from latent_darm.training.data import (
    TrainingExample,
    check_no_overlap,
    dedupe,
    example_id,
    examples_from_jsonl,
    paper_preset,
    split_held_out,
)

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


INITS = ("random", "lstsq")


def seed_lstsq(
    projector: Any, answerer: Any, planner_tokenizer: Any, latents: Any, train: list[Any], ridge: float, main: bool
) -> None:
    """``--init lstsq``: fit the map on the training examples' cached latents and plan tokens; seed ``projector``."""
    from latent_darm.training.projector_lstsq import lstsq_projector, plan_token_embeddings

    keys = [example.id for example in train]
    targets = plan_token_embeddings(answerer, latents.plan_tokens(keys), planner_tokenizer)
    lstsq_projector(projector, latents.load(keys).float().cpu(), targets, ridge)
    projector.to(answerer.device)
    if main:
        console.print(f"--init lstsq: ridge map fitted on {len(keys)} examples' plan positions", highlight=False)


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def family_options(family: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The sampler options for ``family`` (None: not known yet): ``cache`` none and ``latent_rows`` plan are
    passed for every family and dropped where it has no such setting; an explicit ``block_length`` stays, for a
    family without blocks to refuse."""
    from latent_darm.models.family import settings_for

    if family is None:
        return options
    return {**settings_for(family, options), "block_length": options["block_length"]}


@app.command("train-projector")
def train_projector_command(
    planner: str = typer.Option(..., help="Planner checkpoint (LLaDA, Dream, …): directory or Hugging Face id."),
    executor: str = typer.Option(..., help="Executor (causal LM) checkpoint: directory or Hugging Face id."),
    out: Path = typer.Option(
        ..., parser=output_path, metavar="<path>", help="Run directory (rerun the same command to resume)."
    ),
    data: list[Path] = typer.Option(None, "--data", help="JSONL file of training pairs (repeatable)."),
    question_field: str = typer.Option("question", help="--data: field holding the question."),
    target_field: str = typer.Option("answer", help="--data: field holding the gold answer (a string or number)."),
    answer_type: str = typer.Option("math", help="--data: math | integer | mc."),
    benchmark_train: list[str] = typer.Option(
        None,
        help="Registered benchmark whose TRAIN split is training data (repeatable): <data-dir>/<name>/train.jsonl, "
        "else the hub's train split; a benchmark without one is refused.",
    ),
    preset: str = typer.Option(
        None,
        help="paper: ARC-Easy, ARC-Challenge and DART-1…5 from the hub. The DART pool is also where dart1…5 are "
        "evaluated from the hub, so the overlap check refuses it unless DART-k is evaluated on local MATH test files.",
    ),
    preset_per_source: int = typer.Option(5000, help="--preset: questions per source."),
    held_out_per_source: int = typer.Option(10, help="Validation questions held out per source."),
    data_dir: Path = typer.Option(None, envvar=DATA_ENV, help="Folder of <benchmark>/test.jsonl files."),
    exclude_benchmarks: str = typer.Option(
        None,
        help="Evaluation sets training must not overlap, comma-separated (default: every registered benchmark, "
        "loaded as darm eval would: local test file with a data dir, else the hub; one that cannot load refuses).",
    ),
    drop_overlap: bool = typer.Option(False, "--drop-overlap", help="Drop overlapping questions instead of refusing."),
    no_overlap_check: bool = typer.Option(
        False, "--no-overlap-check", help="Skip the train/test overlap check (you vouch for the data)."
    ),
    cache_dir: Path = typer.Option(
        None, parser=cache_dir_path, metavar="<path>", help="Latent cache (default OUT/latents)."
    ),
    gen_length: int = typer.Option(64, help="Plan length L (positions whose latents the projector reads)."),
    steps: int = typer.Option(None, help="Denoising steps (default: gen-length)."),
    block_length: int = typer.Option(
        None, help="Semi-autoregressive block length (LLaDA only, default 32; Dream denoises the whole canvas)."
    ),
    latent_layer: int = typer.Option(-1, help="Planner layer of the latents (-1: after the final norm)."),
    latent_rows: str = typer.Option(
        "plan",
        help="Shifted planners (Dream): latents are the rows at the plan positions (plan) or the rows that "
        "predicted them, one to the left (predictor). Stored with the projector; LLaDA: both are the same rows.",
    ),
    denoise_fraction: float = typer.Option(1.0, help="Take latents after this share of the denoising steps."),
    threshold: float = typer.Option(None, help="Planner fast mode: confidence threshold τ."),
    cache: Cache = typer.Option(Cache.none, help="Planner fast mode: block KV cache."),
    plan_batch_size: int = typer.Option(8, help="Stage 1: questions per planner batch."),
    architecture: str = typer.Option(
        "mlp2_gelu_rmsnorm", help="mlp2_gelu_rmsnorm | mlp3_gelu_rmsnorm | linear | mlp2x_gelu."
    ),
    hidden_dim: int = typer.Option(1024, help="Projector hidden width."),
    placement: str = typer.Option("prefix", help=PLACEMENT_HELP + " Stored with the projector."),
    init: str = typer.Option(
        "random",
        help="random (Xavier) | lstsq: seed the projector with the closed-form ridge least-squares map from the "
        "training latents to the executor's embeddings of the decoded plan tokens, position by position "
        "(linear, mlp2_gelu_rmsnorm, mlp2x_gelu; see latent_darm.training.projector_lstsq). With --max-steps 0 the "
        "map is the projector, training-free.",
    ),
    ridge: float = typer.Option(1e-3, help="--init lstsq: ridge penalty (0: plain least squares)."),
    lr: float = typer.Option(3e-4, help="Projector learning rate."),
    weight_decay: float = typer.Option(1e-3, help="AdamW weight decay."),
    warmup_steps: int = typer.Option(300, help="Linear warm-up steps before the cosine decay."),
    epochs: int = typer.Option(3, help="Passes over the training data."),
    batch_size: int = typer.Option(8, help="Micro-batch per process (effective batch: × --grad-accum × processes)."),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    eval_every: int = typer.Option(500, help="Validate (held-out loss and accuracy) every N steps."),
    save_every: int = typer.Option(500, help="Checkpoint every N steps."),
    seed: int = typer.Option(
        0, callback=seed_callback, help="Seed for the held-out split, the initial weights and the data order."
    ),
    latent_noise: float = typer.Option(0.0, help="Noised-latents control: Gaussian noise relative to latent RMS."),
    lora: bool = typer.Option(False, "--lora/--no-lora", help="Also train LoRA (r 8, α 32) on the executor."),
    lora_lr: float = typer.Option(5e-4, help="LoRA learning rate."),
    mixed_precision: str = typer.Option("auto", help="auto (bf16 on CUDA, none on CPU) | no | bf16."),
    max_new_tokens: int = typer.Option(64, help="Answer budget of the held-out accuracy check."),
    prompts: Path = typer.Option(None, help="JSON/YAML file overriding prompt templates (use it at eval too)."),
    dtype: Dtype = typer.Option(Dtype.auto, case_sensitive=False, help="auto: float32 on CPU, bfloat16 on a GPU."),
    device: TrainDevice = typer.Option(TrainDevice.auto, help="Under accelerate, auto is each process's GPU."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Train the latent projector between PLANNER and EXECUTOR; the best checkpoint lands in OUT/projector."""
    import torch

    from latent_darm.models.autoregressive_lm import AutoregressiveLM
    from latent_darm.models.diffusion_lm import DiffusionLM
    from latent_darm.models.family import local_family, sampler_config
    from latent_darm.pipelines.prompts import load_templates
    from latent_darm.projector.model import Projector, ProjectorConfig, signature_of
    from latent_darm.training.latent_cache import LatentCache, build_latent_cache
    from latent_darm.training.projector_run import RUN_FILE, save_projector
    from latent_darm.training.projector_trainer import (
        ProjectorTrainingConfig,
        check_settings,
        make_accelerator,
        train_projector,
    )

    # Everything that can be checked without a model, first.
    require("matplotlib", "darm train-projector (its training curve)")
    if lora:
        require("peft", "--lora")
    check_answer_type(answer_type)
    check_placement(placement)
    if held_out_per_source < 0:
        raise ConfigError(f"--held-out-per-source must be >= 0, got {held_out_per_source}")
    if plan_batch_size < 1:
        raise ConfigError(f"--plan-batch-size must be >= 1, got {plan_batch_size}")
    if init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}; got {init!r}")
    if not math.isfinite(ridge) or ridge < 0:  # nan passes every comparison and gives a NaN projector
        raise ConfigError(f"--ridge must be a finite number >= 0, got {ridge}")
    training_free = init == "lstsq" and max_steps == 0  # the map alone: 0 steps is a value here, not a mistake
    for name, value in (("steps", steps), ("block-length", block_length), ("max-steps", max_steps)):
        if not (training_free and name == "max-steps"):
            check_positive(name, value)
    if device != TrainDevice.auto:
        resolve_device(device.value)  # --device cuda on a machine without CUDA is refused, not run on the CPU
    check_output_dir(out)
    cache_root = cache_dir or out / "latents"
    check_output_dir(cache_root, "--cache-dir" if cache_dir is not None else "--out")
    family = local_family(planner)
    sampler_options: dict[str, Any] = {
        "gen_length": gen_length,
        "block_length": block_length
        if family is not None and not family.uses_blocks
        else min(block_length or 32, gen_length),
        "steps": gen_length if steps is None else steps,
        "threshold": threshold,
        "cache": cache.value,
        "hidden_layer": latent_layer,
        "denoise_fraction": denoise_fraction,
        "latent_rows": latent_rows,
    }
    sampler = sampler_config(family, **family_options(family, sampler_options))
    ProjectorConfig(
        1, 1, architecture=architecture, hidden_dim=hidden_dim, placement=placement, latent_rows=latent_rows
    )
    config = ProjectorTrainingConfig(
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_steps=None if training_free else max_steps,
        mixed_precision=mixed_precision,
        eval_every=eval_every,
        save_every=save_every,
        max_new_tokens=max_new_tokens,
        seed=seed,
        latent_noise=latent_noise,
        lora=lora,
        lora_lr=lora_lr,
    )
    if training_free and (out / RUN_FILE).exists():  # the map never replaces a trained run's projector
        raise ConfigError(f"--out {out} holds a trained projector run; give --init lstsq --max-steps 0 its own --out")
    check_settings(out, config)  # a directory of other settings is refused before any work
    templates = load_templates(prompts)
    pools = list(benchmark_train or [])
    examples = gather_examples(
        list(data or []), question_field, target_field, answer_type, pools, data_dir, preset, preset_per_source, seed
    )
    if no_overlap_check:
        evaluation: dict[str, list[str]] | None = None
    else:
        evaluation = evaluation_sets(exclude_benchmarks, data_dir)
        examples = check_no_overlap(examples, evaluation, drop=drop_overlap)
    train, held_out = split_held_out(examples, per_source=held_out_per_source, seed=seed)
    if not train:
        raise DataError("no training examples left after holding out validation questions")
    # Both models' files, before any model loads (the executor's would otherwise be read only after stage 1), and
    # their weights against those the latents and the run were made with.
    weights = check_models(planner, executor)
    LatentCache.check_planner(cache_root, weights["planner"])
    check_settings(out, config, weights)

    from filelock import FileLock  # here: `darm --help` imports this module

    accelerator = make_accelerator(config, cpu=True if device == "cpu" else None)
    # One process at a time per run directory (a second waits, then finds the work done and reuses it); the ranks
    # of one multi-process run share the directory and do not take the lock.
    lock = FileLock(out / LOCK_FILE) if accelerator.num_processes == 1 else contextlib.nullcontext()
    with lock:
        main = accelerator.is_main_process
        show = progress and main
        if main:
            checked = "NOT CHECKED (--no-overlap-check)" if evaluation is None else ", ".join(sorted(evaluation))
            console.print(
                f"{len(train)} training and {len(held_out)} held-out questions; kept disjoint from: {checked}",
                highlight=False,
                soft_wrap=True,
            )
        weights_dtype = parse_dtype(resolve_dtype(dtype, accelerator.device.type))
        # Multi-process CPU runs report "cpu:<rank>", which safetensors does not accept as a load device.
        load_device = accelerator.device if accelerator.device.type != "cpu" else torch.device("cpu")

        # Stage 1: the planner's latents, computed once and shared out across processes.
        diffusion = DiffusionLM.from_pretrained(planner, dtype=weights_dtype, device=load_device)
        # a hub planner's family is known only now
        sampler = diffusion.sampler_config(**family_options(diffusion.family, sampler_options))
        layers = diffusion.num_layers
        if not -1 <= latent_layer <= layers:
            raise ConfigError(f"--latent-layer must be -1 or 0..{layers} for this planner, got {latent_layer}")
        planner_side = signature_of(diffusion)
        planner_tokenizer = diffusion.tokenizer  # --init lstsq maps plan token ids into the executor's vocabulary
        everything = train + held_out
        with progress_bar(show, console=console) as bar:
            # Under several processes this bar counts the main process's share only.
            shared = accelerator.num_processes > 1
            task = bar.add_task("stage 1: caching plan latents", total=None if shared else len(everything))
            build_latent_cache(
                diffusion,
                everything,
                cache_root,
                sampler,
                templates,
                batch_size=plan_batch_size,
                rank=accelerator.process_index,
                world_size=accelerator.num_processes,
                on_progress=lambda n: bar.advance(task, n),
            )
        accelerator.wait_for_everyone()
        latents = LatentCache.open(cache_root)
        del diffusion
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

        # Stage 2.
        answerer = AutoregressiveLM.from_pretrained(executor, dtype=weights_dtype, device=load_device)
        torch.manual_seed(seed)
        projector = Projector.for_pair(
            planner_side,
            answerer,
            architecture,
            hidden_dim=hidden_dim,
            plan_length=gen_length,
            latent_layer=latent_layer,
            latent_rows=latent_rows,
            placement=placement,
            planner_sampler=sampler.to_dict(),
        )
        provenance: dict[str, Any] = {
            "planner": planner,
            "executor": executor,
            "sampler": sampler.to_dict(),
            "latent_cache": str(cache_root),
            "data": sorted({e.source for e in examples}),
            "kept_disjoint_from": None if evaluation is None else sorted(evaluation),
            "prompts": None if prompts is None else str(prompts),
            "init": init if init == "random" else {"init": init, "ridge": ridge},
        }
        if init == "lstsq":
            seed_lstsq(projector, answerer, planner_tokenizer, latents, train, ridge, main)
        if training_free:
            if main:  # one writer: save_projector replaces the directory by a rename
                saved = save_projector(projector, None, out, provenance)
                console.print(f"projector → {saved} (--init lstsq, 0 steps: no training)", highlight=False)
            accelerator.wait_for_everyone()
            return
        summary = train_projector(
            projector,
            answerer,
            latents,
            train,
            held_out,
            out,
            config,
            templates=templates,
            accelerator=accelerator,
            provenance=provenance,
            progress=show,
        )
        if main:
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
