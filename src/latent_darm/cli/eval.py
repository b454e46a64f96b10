"""``darm eval``: run a pipeline on a benchmark into a resumable results directory.

The command turns its options into a pipeline spec through the pipeline builder
(:mod:`latent_darm.pipelines.builder`), stores its JSON layout in ``config.json`` and hands that to
``build_pipeline``; ``darm diagnose`` later derives its swapped pipelines from the same stored spec. The device is
added only when building: it is not part of the configuration, so a run can resume on another GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.choices import DEVICE_HELP, PipelineKind, complete_benchmark, complete_device
from latent_darm.cli.common import check_output_dir, console, output_path, runtime_device, seed_callback
from latent_darm.cli.options import PipelineOptions, with_option_groups
from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import DATA_ENV, PAPER_PROTOCOL, benchmark_names, load_benchmark
from latent_darm.evaluation.runner import (
    EvalSummary,
    accelerate_state,
    check_run_config,
    evaluate,
    examples_fingerprint,
    finished_summary,
)
from latent_darm.models.fingerprint import reference_fingerprint


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


def summary_line(benchmark: str, summary: EvalSummary, out: Path) -> str:
    s = summary
    return (
        f"{benchmark}: accuracy {s.accuracy:.1%} ({s.correct}/{s.n}), tokens/question planner "
        f"{s.mean_planner_tokens:.1f} + executor {s.mean_executor_tokens:.1f} = {s.mean_total_tokens:.1f}, "
        f"{s.seconds_per_question:.2f} s/question, truncated {s.truncation_rate:.1%}, {s.computed} new → {out}"
    )


def run_config(
    benchmark: str, examples: list[Any], selection: dict[str, int | None], spec: dict[str, Any], batch_size: int,
    label: str | None,
) -> dict[str, Any]:  # fmt: skip
    """What ``config.json`` records of a run: a resume with any of it changed is refused."""
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
    return config


@with_option_groups
def eval_command(
    pipeline: PipelineKind = typer.Option(..., help="Which pipeline to run."),
    options: PipelineOptions = ...,  # type: ignore[assignment]  (expanded into its options)
    benchmark: str = typer.Option(
        ..., help=f"Benchmark name: {', '.join(benchmark_names())}.", autocompletion=complete_benchmark
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
    spec = options.spec(pipeline.value, run_device)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    check_output_dir(out)
    selection = subset(limit, seed, paper_protocol)
    examples = load_benchmark(benchmark, data_dir=data_dir, **selection)
    if not examples:
        raise DataError(f"benchmark {benchmark!r}: the selection is empty")
    config = run_config(benchmark, examples, selection, spec, batch_size, label)
    check_run_config(out, config, partial=True)  # refuse a foreign directory before loading any model
    main_process = accelerate_state().is_main_process
    summary = finished_summary(out, examples, config, write=main_process)  # a finished run loads no model
    if summary is None:
        from latent_darm.pipelines.factory import build_pipeline

        built = build_pipeline({**spec, "device": run_device})
        summary = evaluate(built, examples, out, batch_size=batch_size, config=config, progress=progress)
    if main_process:
        console.print(summary_line(benchmark, summary, out), highlight=False, soft_wrap=True)
        typer.echo(json.dumps({"benchmark": benchmark, "out": str(out), **summary.to_dict()}))
