"""``darm demo``: the whole method on the toy world, through the same code paths as the 8B checkpoints.

Phases, each cached or resumable, so a second run only evaluates what is missing:

1. the world (:func:`~latent_darm.toy.build.build_world`): data, tokenizer, executor and planner, in the cache;
2. the projector: stage-1 latents of the planner over train-split questions, then the project's projector trainer
   (``train_projector``) with both models frozen — a training run directory inside the world's cache entry, keyed
   by the projector settings, from which a rerun resumes (or finds it finished);
3. evaluation of every configuration on the test split (all levels) with the evaluation runner, one resumable
   results directory per configuration under ``OUT/runs/``;
4. the report (``write_report``: Markdown tables overall and per level, CSV, the accuracy-against-tokens PNG) and
   ``OUT/demo.json`` (settings, paths, seconds per phase, summaries).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from latent_darm.bridge.projector import Projector
from latent_darm.evaluation.benchmarks import Example, load_benchmark
from latent_darm.evaluation.report import Run, load_run, write_report
from latent_darm.evaluation.runner import EvalSummary, evaluate, examples_fingerprint
from latent_darm.io import atomic_write_json
from latent_darm.models.executor import CausalExecutor
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.progress import progress_bar
from latent_darm.sampling import SamplerConfig
from latent_darm.toy.benchmarks import TEST_BENCHMARK, register_toy_benchmarks
from latent_darm.toy.build import WorldArtifacts, build_world, single_thread
from latent_darm.toy.world import ToyProblem, WorldConfig, quick_config
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import build_latent_cache
from latent_darm.training.projector_trainer import ProjectorTrainingConfig, train_projector

DEMO_FILE = "demo.json"
RUNS_DIR = "runs"
LATENT_LAYER = -1  # the paper's latents: last layer, after the final norm


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and runs. ``step_budgets`` are the planner's denoising steps for the two DDLM→ARM
    pipelines (the first is the full budget, one token per step, used by every other configuration too)."""

    world: WorldConfig
    projector: ProjectorTrainingConfig
    projector_questions: int
    projector_hidden: int = 1024
    step_budgets: tuple[int, ...] = (8, 4, 2)
    answer_tokens: int = 16
    cot_tokens: int = 32
    batch_size: int = 64

    def projector_key(self) -> str:
        """Hash of everything that decides the trained projector (its run directory's name)."""
        payload = {
            "world": self.world.fingerprint(),
            "training": self.projector.to_dict(),
            "questions": {"n": self.projector_questions, "selection": "seeded sample of the train split"},
            "hidden": self.projector_hidden,
            "templates": PromptTemplates().to_dict(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def demo_settings(*, quick: bool = False, seed: int = 0) -> DemoSettings:
    """The default demo, or the ``--quick`` one (a small world whose models learn little; for tests)."""
    if quick:
        return DemoSettings(
            world=quick_config(seed),
            projector=ProjectorTrainingConfig(
                lr=3e-3, warmup_steps=5, epochs=1, batch_size=16, max_steps=30, eval_every=15, save_every=15,
                mixed_precision="no", seed=seed, eval_batch_size=32, max_new_tokens=12,
            ),
            projector_questions=240,
            projector_hidden=64,
            step_budgets=(8, 4),
        )  # fmt: skip
    return DemoSettings(
        world=WorldConfig(seed=seed),
        projector=ProjectorTrainingConfig(
            lr=1e-3, warmup_steps=30, epochs=2, batch_size=32, eval_every=100, save_every=100,
            mixed_precision="no", seed=seed, eval_batch_size=64, max_new_tokens=12,
        ),
        projector_questions=3000,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# The projector
# ----------------------------------------------------------------------------------------------------------------


def training_example(problem: ToyProblem) -> TrainingExample:
    """A world problem as a projector training pair: graded on the answer, trained on the executor's reply."""
    return TrainingExample(
        id=problem.id,
        question=problem.question,
        target=str(problem.answer),
        answer_type="integer",
        source="toy",
        reply=problem.last_step,
    )


def latent_sampler(artifacts: WorldArtifacts) -> SamplerConfig:
    """The planner's own sampler (exact, one token per step) returning last-layer latents."""
    return SamplerConfig(**{**artifacts.plan_sampler().to_dict(), "hidden_layer": LATENT_LAYER})


def train_demo_projector(artifacts: WorldArtifacts, settings: DemoSettings, *, progress: bool = True) -> Path:
    """Train (or resume, or reuse) the projector for ``artifacts``' planner/executor pair; returns its directory.

    Training pairs are a seeded sample of ``projector_questions`` from the train split (every level; the splits
    never share a question); the validation split is the held-out set that picks the best checkpoint.
    """
    run_dir = artifacts.directory / f"projector-{settings.projector_key()}"
    pool = artifacts.problems("train")  # ordered by level: draw a seeded sample across all levels
    picked = random.Random(f"projector:{artifacts.config.seed}").sample(
        pool, min(settings.projector_questions, len(pool))
    )
    train = [training_example(p) for p in picked]
    held_out = [training_example(p) for p in artifacts.problems("validation")]
    planner = artifacts.load_planner()
    sampler = latent_sampler(artifacts)
    templates = PromptTemplates()
    everything = train + held_out
    bar = progress_bar(progress, remaining=False)
    with bar:
        task = bar.add_task("planner latents", total=len(everything))
        cache = build_latent_cache(
            planner,
            everything,
            run_dir / "latents",
            sampler,
            templates,
            batch_size=settings.batch_size,
            on_progress=lambda n: bar.advance(task, n),
        )
    executor = CausalExecutor.from_pretrained(artifacts.executor_dir)
    torch.manual_seed(settings.projector.seed)  # the projector's initial weights: same settings, same projector
    projector = Projector.for_pair(
        planner,
        executor,
        hidden_dim=settings.projector_hidden,
        plan_length=sampler.gen_length,
        latent_layer=LATENT_LAYER,
    )
    provenance = {"world": artifacts.config.fingerprint(), "sampler": sampler.to_dict(), "data": "toy train split"}
    summary = train_projector(
        projector,
        executor,
        cache,
        train,
        held_out,
        run_dir,
        settings.projector,
        templates=templates,
        provenance=provenance,
        progress=progress,
    )
    return Path(summary.projector_dir)


# ----------------------------------------------------------------------------------------------------------------
# The configurations
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfiguration:
    """One row of the demo's table: a label and the pipeline spec (``build_pipeline``'s layout)."""

    label: str
    spec: dict[str, Any]

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.label.lower()).strip("-").replace("--", "-")


def _ddlm(model: Path, length: int, block: int, steps: int | None = None) -> dict[str, Any]:
    return {
        "kind": "ddlm",
        "model": str(model),
        "gen_length": length,
        "steps": steps or length,
        "block_length": block,
        "threshold": None,
        "cache": "none",
    }


def _arm(model: Path, max_new_tokens: int) -> dict[str, Any]:
    return {"kind": "arm", "model": str(model), "max_new_tokens": max_new_tokens, "repetition_penalty": 1.0}


def _spec(
    kind: str,
    planner: dict[str, Any] | None,
    executor: dict[str, Any],
    *,
    projector: Path | None = None,
    chain_of_thought: bool = False,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "planner": planner,
        "executor": executor,
        "projector": None if projector is None else str(projector),
        "chain_of_thought": chain_of_thought,
        "latent_noise": 0.0,
        "prompts": None,
        "dtype": "float32",
    }


def demo_configurations(artifacts: WorldArtifacts, projector: Path, settings: DemoSettings) -> list[DemoConfiguration]:
    """Executor alone (direct, CoT), planner alone, the four text pairings, latent DDLM→ARM, and the step sweep of
    the two DDLM→ARM pipelines."""
    c = artifacts.config
    ddlm, arm = artifacts.planner_dir, artifacts.executor_dir
    plan_ddlm = _ddlm(ddlm, c.plan_length, c.block_length)
    plan_arm = _arm(arm, c.plan_length)
    answer_ddlm = _ddlm(ddlm, c.answer_length, c.answer_length)
    answer_arm = _arm(arm, settings.answer_tokens)
    configurations = [
        DemoConfiguration("ARM direct", _spec("arm", None, answer_arm)),
        DemoConfiguration("ARM CoT", _spec("arm", None, _arm(arm, settings.cot_tokens), chain_of_thought=True)),
        DemoConfiguration("DDLM alone", _spec("ddlm", None, answer_ddlm)),
        DemoConfiguration("text DDLM→ARM", _spec("text", plan_ddlm, answer_arm)),
        DemoConfiguration("text ARM→DDLM", _spec("text", plan_arm, answer_ddlm)),
        DemoConfiguration("text ARM→ARM", _spec("text", plan_arm, answer_arm)),
        DemoConfiguration("text DDLM→DDLM", _spec("text", plan_ddlm, answer_ddlm)),
        DemoConfiguration("latent DDLM→ARM", _spec("latent", plan_ddlm, answer_arm, projector=projector)),
    ]
    for steps in settings.step_budgets:
        if steps == c.plan_length:
            continue  # the full budget is the rows above
        planner = _ddlm(ddlm, c.plan_length, c.block_length, steps)
        configurations += [
            DemoConfiguration(f"text DDLM→ARM, {steps} steps", _spec("text", planner, answer_arm)),
            DemoConfiguration(
                f"latent DDLM→ARM, {steps} steps", _spec("latent", planner, answer_arm, projector=projector)
            ),
        ]
    return configurations


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DemoOutcome:
    """What a demo run produced: the output directory, the report files, one loaded run per configuration (with
    its records), the world and projector it used, and seconds per phase."""

    out_dir: Path
    report: list[Path]
    runs: list[Run]
    summaries: dict[str, EvalSummary]
    world: WorldArtifacts
    projector_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)


def evaluate_configuration(
    configuration: DemoConfiguration,
    examples: list[Example],
    out_dir: Path,
    models: ModelCache,
    settings: DemoSettings,
    *,
    world: str,
    progress: bool,
) -> EvalSummary:
    """One configuration into ``out_dir/runs/<slug>`` (resumable; a finished run answers nothing again)."""
    config = {
        "benchmark": TEST_BENCHMARK,
        "label": configuration.label,
        "spec": configuration.spec,
        "examples": examples_fingerprint(examples),
        "world": world,
    }
    pipeline = build_pipeline(configuration.spec, models)
    directory = out_dir / RUNS_DIR / configuration.slug
    return evaluate(pipeline, examples, directory, batch_size=settings.batch_size, config=config, progress=progress)


def run_demo(
    settings: DemoSettings,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> DemoOutcome:
    """Build or reuse the world and the projector, evaluate every configuration, write the report."""
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    with single_thread():  # tiny models: one thread is faster than two fighting over two cores
        started = time.perf_counter()
        world = build_world(settings.world, cache_dir, progress=progress)
        seconds["world"] = time.perf_counter() - started
        log(f"world {'reused from' if world.reused else 'built in'} {world.directory}")
        register_toy_benchmarks(world)

        started = time.perf_counter()
        projector_dir = train_demo_projector(world, settings, progress=progress)
        seconds["projector"] = time.perf_counter() - started
        log(f"projector: {projector_dir}")

        started = time.perf_counter()
        examples = load_benchmark(TEST_BENCHMARK)
        models = ModelCache(torch.float32, "cpu")
        summaries = {}
        configurations = demo_configurations(world, projector_dir, settings)
        for configuration in configurations:
            summaries[configuration.label] = evaluate_configuration(
                configuration, examples, out_dir, models, settings, world=world.config.fingerprint(), progress=progress
            )
        seconds["evaluation"] = time.perf_counter() - started

    directories = [out_dir / RUNS_DIR / c.slug for c in configurations]
    report = write_report(directories, out_dir)
    runs = [load_run(d) for d in directories]
    record = {
        "world": {"directory": str(world.directory), "reused": world.reused, "config": asdict(world.config)},
        "projector": str(projector_dir),
        "settings": {k: v for k, v in asdict(settings).items() if k != "world"},
        "seconds": seconds,
        "summaries": {label: summary.to_dict() for label, summary in summaries.items()},
    }
    atomic_write_json(out_dir / DEMO_FILE, record)
    return DemoOutcome(out_dir, report, runs, summaries, world, projector_dir, seconds)
