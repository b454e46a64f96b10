"""``darm diagnose``: the paper's error attribution (Figures 4–5) on the failed items of a results directory.

Setup X swaps the diffusion planner for an autoregressive one (same executor): a failure it fixes is the planner's.
Setup Y swaps the autoregressive executor for a diffusion one reading the same plan — the plan the run recorded in
its results, not a re-sampled one: a failure it fixes is the executor's. X is checked first, as in the paper; a failure
neither swap fixes is "unresolved". For a latent run both swaps go through text space, because the projector only
fits the original planner/executor pair.

Each swap is an ordinary evaluation of the failed items in ``DIR/diagnosis/<setup>/`` (so it resumes, refuses a
changed setting, and runs data-parallel like ``darm eval``); ``diagnosis.jsonl`` and ``diagnosis.json`` join them.
"""

from __future__ import annotations

import gc
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latent_darm.config_diff import COSMETIC_KEYS
from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import Example
from latent_darm.evaluation.report import Run, load_run
from latent_darm.evaluation.runner import (
    check_run_config,
    current_processes,
    evaluate,
    load_results,
    read_config,
)
from latent_darm.figures import agg_figure
from latent_darm.io import atomic_write_json, atomic_write_text
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.builder import RECORDED_PLANS, executor_swap_spec, planner_swap_spec

PLANNER_SWAP = "planner_swap"  # Setup X
EXECUTOR_SWAP = "executor_swap"  # Setup Y
ATTRIBUTIONS = ("planner", "executor", "unresolved")
BuildPipeline = Callable[[dict[str, Any]], Pipeline]


# ----------------------------------------------------------------------------------------------------------------
# Attribution
# ----------------------------------------------------------------------------------------------------------------


def attribute(planner_swap_correct: bool | None, executor_swap_correct: bool | None) -> str:
    """Setup X first (planner), then Y (executor), else unresolved; None means the setup did not apply."""
    if planner_swap_correct:
        return "planner"
    if executor_swap_correct:
        return "executor"
    return "unresolved"


@dataclass
class Diagnosis:
    """The attribution of one results directory's failures."""

    directory: Path
    label: str
    benchmark: str
    n_items: int
    items: list[dict[str, Any]]
    specs: dict[str, dict[str, Any] | None]

    def counts(self) -> dict[str, int]:
        return {name: sum(item["attribution"] == name for item in self.items) for name in ATTRIBUTIONS}

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts()
        failed = len(self.items)
        fixed = {
            setup: sum(bool(item[setup] and item[setup]["correct"]) for item in self.items) for setup in self.specs
        }
        return {
            "label": self.label,
            "benchmark": self.benchmark,
            "n_items": self.n_items,
            "n_failed": failed,
            "counts": counts,
            "shares_of_failures": {k: v / failed if failed else 0.0 for k, v in counts.items()},
            "rates_of_all_items": {k: v / self.n_items if self.n_items else 0.0 for k, v in counts.items()},
            "fixed_by": fixed,
            "fixed_by_both": sum(
                all(item[setup] and item[setup]["correct"] for setup in self.specs) for item in self.items
            ),
            "setups": {setup: {"applicable": spec is not None, "spec": spec} for setup, spec in self.specs.items()},
        }


# ----------------------------------------------------------------------------------------------------------------
# Running the swaps
# ----------------------------------------------------------------------------------------------------------------


def failed_examples(run: Run) -> list[Example]:
    """The failed items, rebuilt from their result lines (no need to reload the benchmark)."""
    examples = []
    for record in run.records:
        if record.get("correct"):
            continue
        missing = [key for key in ("question", "gold", "answer_type") if not isinstance(record.get(key), str)]
        if missing:
            raise DataError(f"{run.directory}: result {record['id']!r} lacks {missing[0]!r}")
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        examples.append(Example(record["id"], record["question"], record["gold"], record["answer_type"], meta))
    return examples


@dataclass
class RecordedPlans:
    """Setup Y's planner: each question's plan as the original run wrote it (its ``plan`` and planner cost), looked
    up by planner prompt. Re-sampling could give another plan (a sampler setting, a seed, a fast mode) and costs a
    planner pass per failure."""

    records: dict[str, dict[str, Any]]
    kind: str = "ddlm"

    def write(self, prompts: Sequence[str], batch_size: int) -> list[Any]:
        from latent_darm.pipelines.writers import Written

        written = []
        for prompt in prompts:
            record = self.records.get(prompt)
            if record is None or not isinstance(record.get("plan"), str):
                raise DataError(f"setup Y: no recorded plan for planner prompt {prompt[:60]!r}")
            tokens, passes = record.get("planner_tokens", 0), record.get("planner_forward_passes", 0)
            written.append(Written(record["plan"], int(tokens), int(passes), 0.0))
        return written

    def render(self, prompt: str) -> str:
        """No model renders a recorded plan's prompt: the prompt itself (for the runner's prompt record)."""
        return prompt

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "plans": RECORDED_PLANS}


def with_recorded_plans(pipeline: Pipeline, run: Run) -> Pipeline:
    """A text pipeline whose planner is replaced by the plans ``run`` recorded (other pipelines unchanged)."""
    from latent_darm.pipelines.text import TextPipeline

    if not isinstance(pipeline, TextPipeline):
        return pipeline
    records = {pipeline.templates.planner_prompt(r["question"]): r for r in run.records if "question" in r}
    return replace(pipeline, planner=RecordedPlans(records, kind=pipeline.planner.kind))


def _already_done(directory: Path, config: dict[str, Any], ids: Sequence[str]) -> bool:
    """A finished swap with the same settings is read back without loading any model."""
    stored = read_config(directory)
    if stored is None:
        return False
    wanted = json.loads(json.dumps(config))
    if any(stored.get(key) != value for key, value in wanted.items() if key not in COSMETIC_KEYS):
        return False
    return set(ids) <= set(load_results(directory))


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_setup(
    run: Run,
    setup: str,
    spec: dict[str, Any],
    examples: list[Example],
    build_pipeline_fn: BuildPipeline,
    runtime: dict[str, Any],
    **evaluate_options: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate one swapped configuration on the failures; results by id."""
    directory = run.directory / "diagnosis" / setup
    config = {"benchmark": run.benchmark, "setup": setup, "spec": spec, "label": f"{run.label} [{setup}]"}
    if not _already_done(directory, config, [e.id for e in examples]):
        check_run_config(directory, config, partial=True)  # refuse other swap settings before loading any model
        pipeline = build_pipeline_fn({**spec, **runtime})
        if spec.get("plans") == RECORDED_PLANS:
            pipeline = with_recorded_plans(pipeline, run)
        evaluate(pipeline, examples, directory, config=config, **evaluate_options)
        del pipeline  # free this setup's models before the next setup loads its own
        _release_memory()
    return load_results(directory)


def diagnose(
    directory: str | Path,
    build_pipeline_fn: BuildPipeline,
    *,
    ar_planner: str | None = None,
    diffusion_executor: str | None = None,
    diffusion_gen_length: int | None = None,
    runtime: dict[str, Any] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    barrier: Callable[[], None] | None = None,
) -> Diagnosis:
    """Run setups X and Y on the failures of ``directory`` and write ``diagnosis.jsonl`` / ``diagnosis.json``.

    ``runtime`` (e.g. the device) is added to each swapped spec when building, but is not part of its
    configuration.
    """
    run = load_run(directory)
    spec = run.config.get("spec")
    if not isinstance(spec, dict):
        raise DataError(f"{run.directory}: config.json has no 'spec'; diagnose needs a directory written by darm eval")
    specs = {
        PLANNER_SWAP: planner_swap_spec(spec, ar_planner),
        EXECUTOR_SWAP: executor_swap_spec(spec, diffusion_executor, diffusion_gen_length),
    }
    if all(value is None for value in specs.values()):
        raise ConfigError(f"{run.directory}: '{run.label}' has no diffusion planner or autoregressive executor to swap")
    examples = failed_examples(run)
    outcomes: dict[str, dict[str, dict[str, Any]]] = {}
    for setup, swapped in specs.items():
        if swapped is not None and examples:
            options = dict(batch_size=batch_size, progress=progress, shard=shard, barrier=barrier)
            outcomes[setup] = run_setup(run, setup, swapped, examples, build_pipeline_fn, runtime or {}, **options)
    items = [_item(example, run, specs, outcomes) for example in examples]
    diagnosis = Diagnosis(run.directory, run.label, run.benchmark, len(run.records), items, specs)
    if current_processes(shard, barrier).is_main:
        atomic_write_text(run.directory / "diagnosis.jsonl", "".join(json.dumps(i) + "\n" for i in items))
        atomic_write_json(run.directory / "diagnosis.json", diagnosis.to_dict())
    return diagnosis


def _item(
    example: Example, run: Run, specs: dict[str, Any], outcomes: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    original = next(r for r in run.records if r["id"] == example.id)
    item: dict[str, Any] = {"id": example.id, "gold": example.gold, "extracted": original.get("extracted")}
    for setup in specs:
        record = outcomes.get(setup, {}).get(example.id)
        item[setup] = None if record is None else {"correct": bool(record["correct"]), "extracted": record["extracted"]}
    x, y = item[PLANNER_SWAP], item[EXECUTOR_SWAP]
    item["attribution"] = attribute(None if x is None else x["correct"], None if y is None else y["correct"])
    return item


# ----------------------------------------------------------------------------------------------------------------
# Figure
# ----------------------------------------------------------------------------------------------------------------


def plot_attribution(diagnoses: Sequence[Diagnosis], path: Path) -> None:
    """Grouped bars per configuration: planner, executor and unresolved errors as a share of its failures."""
    size = (max(6.0, 3.0 * len(diagnoses) + 1.5), 5.0)
    figure = agg_figure("the diagnosis chart", figsize=size, layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(ATTRIBUTIONS)
    positions = range(len(diagnoses))
    for offset, name in enumerate(ATTRIBUTIONS):
        counts = [d.counts()[name] for d in diagnoses]
        shares = [100 * c / len(d.items) if d.items else 0.0 for c, d in zip(counts, diagnoses, strict=True)]
        bars = axes.bar([p + (offset - 1) * width for p in positions], shares, width, label=f"{name} errors")
        axes.bar_label(bars, labels=[str(c) for c in counts], fontsize="small")
    ticks = [textwrap.fill(d.label, 30) + f"\n{d.benchmark}, {len(d.items)} failed" for d in diagnoses]
    axes.set_xticks(list(positions), ticks, fontsize="small")
    axes.set_ylabel("share of failed answers (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Error attribution\nsetup X: planner swap · setup Y: executor swap", fontsize="medium")
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
