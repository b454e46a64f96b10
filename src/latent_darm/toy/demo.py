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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from latent_darm.errors import ConfigError
from latent_darm.evaluation.benchmarks import Example, load_benchmark
from latent_darm.evaluation.report import Run, load_run, write_report
from latent_darm.evaluation.runner import EvalSummary, evaluate, examples_fingerprint
from latent_darm.io import atomic_write_json
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.builder import autoregressive_role, diffusion_role, spec_from_roles
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.pipelines.spec import AutoregressiveRole, DiffusionRole, Role
from latent_darm.threads import single_thread
from latent_darm.toy.benchmarks import TEST_BENCHMARK, register_toy_benchmarks
from latent_darm.toy.build import PREFIX_EXECUTOR, WorldArtifacts, build_prefix_executor, build_world
from latent_darm.toy.controls import gold_plan_pipeline, plan_embedding_pipeline
from latent_darm.toy.curves import CURVES_FIGURE, Curve, plot_curves, read_curves
from latent_darm.toy.figure import plot_accuracy_vs_forward_passes
from latent_darm.toy.processes import map_in_processes
from latent_darm.toy.projectors import PlanSetting, ProjectorRecipe, recipe_key
from latent_darm.toy.training_jobs import TrainingJob, run_jobs
from latent_darm.toy.world import WorldConfig, quick_config
from latent_darm.training.latent_cache import SPEC_VERSION
from latent_darm.training.projector_trainer import COSMETIC, ProjectorTrainingConfig

DEMO_FILE = "demo.json"
NFE_FIGURE = "toy_accuracy_vs_forward_passes.png"
RUNS_DIR = "runs"
# Projector recipes, by the part of a configuration's label that names them.
MATCHED, MIXTURE, LORA, PREFIX, INLINE, LSTSQ = "matched", "mixture", "lora", "prefix", "inline", "lstsq-inline"
TEXT_LORA = "text-lora"  # not a projector: the executor with a LoRA trained on text plans (toy/text_lora.py)
NOISE = 100.0  # the noise control: Gaussian noise 100× the latents' RMS added, so the soft tokens carry no plan


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and runs.

    ``step_budgets`` are the planner's denoising steps for the DDLM→ARM step sweep (the first is the full budget,
    one token per step, used by every other configuration too); ``denoise_fractions`` stop the full-budget
    process after that share of its steps (the paper's partly denoised latents). ``projector`` trains the
    projector alone; ``lora_projector`` the projector and a LoRA on the executor.
    """

    world: WorldConfig
    projector: ProjectorTrainingConfig
    projector_questions: int
    lora_projector: ProjectorTrainingConfig | None = None
    projector_hidden: int = 1024
    step_budgets: tuple[int, ...] = (8, 4, 2)
    denoise_fractions: tuple[float, ...] = (0.5, 0.25)
    answer_tokens: int = 16
    cot_tokens: int = 32
    batch_size: int = 64
    prefix_steps: int = 150  # fine-tuning steps of the plan-prefix executor (when the world has one)

    def plan_settings(self) -> list[PlanSetting]:
        """Every planner setting of the sweep: the step budgets, then the partly denoised full budget."""
        full = self.step_budgets[0]
        return [PlanSetting(s) for s in self.step_budgets] + [PlanSetting(full, f) for f in self.denoise_fractions]

    def recipes(self) -> list[ProjectorRecipe]:
        """One projector per step budget (``matched``), one on the mixture of every setting (step budgets and
        partly denoised plans), and on that mixture: LoRA on the executor, and the plan-prefix executor's projector
        (when the world has that executor). Partly denoised plans have no matched projector of their own (CPU
        budget): the mixture projectors were trained on their latents."""
        settings = tuple(self.plan_settings())
        steps = [s for s in settings if s.denoise_fraction == 1.0]
        recipes = [ProjectorRecipe(f"{MATCHED}-{s.key}", "executor", False, (s,)) for s in steps]
        recipes += [ProjectorRecipe(f"{INLINE}-{s.key}", "executor", False, (s,), "inline") for s in steps]
        recipes.append(ProjectorRecipe(LSTSQ, "executor", False, steps[:1], "inline", lstsq=True))
        recipes.append(ProjectorRecipe(MIXTURE, "executor", False, settings))
        if self.lora_projector is not None:
            recipes.append(ProjectorRecipe(LORA, "executor", True, settings))
        if self.world.prefix_executor:
            recipes.append(ProjectorRecipe(PREFIX, self.prefix_executor_name, False, settings))
        return recipes

    @property
    def prefix_executor_name(self) -> str:
        """The plan-prefix executor's directory in the world's cache entry."""
        return f"{PREFIX_EXECUTOR}-{self.prefix_steps}"

    def training_config(self, recipe: ProjectorRecipe) -> ProjectorTrainingConfig:
        if recipe.lora:
            if self.lora_projector is None:
                raise ConfigError(f"recipe {recipe.name} needs lora_projector settings")
            return self.lora_projector
        return self.projector

    def projector_key(self, recipe: ProjectorRecipe) -> str:
        """Hash of everything that decides ``recipe``'s trained projector (its run directory's name)."""
        return recipe_key(
            {
                "world": self.world.fingerprint(),
                "recipe": recipe.to_dict(),
                "training": self.training_config(recipe).to_dict(),
                "questions": {"n": self.projector_questions, "selection": "seeded sample of the train split"},
                "hidden": self.projector_hidden,
                "templates": PromptTemplates().to_dict(),
                "latent_cache": SPEC_VERSION,  # its latents' identity is part of the run's (a new run directory)
            }
        )

    def text_lora_key(self) -> str:
        """Hash of everything that decides the text-LoRA executor (the LoRA recipe's settings and questions)."""
        recipe = next(r for r in self.recipes() if r.name == LORA)
        return recipe_key(
            {
                "world": self.world.fingerprint(),
                "settings": [s.key for s in recipe.settings],
                "training": self.training_config(recipe).to_dict(),
                "questions": self.projector_questions,
                "templates": PromptTemplates().to_dict(),
                "latent_cache": SPEC_VERSION,
                "kind": TEXT_LORA,
                "init": "seeded",  # LoRA's initial weights seeded from the training seed (before: the process's state)
            }
        )

    def fingerprint(self) -> str:
        """Hash of every setting that changes a trained model or a number in the demo's table: the world's
        fingerprint (data, tokenizer, both models, prompt templates) and everything here. The README's demo
        table states the fingerprint of the run it comes from."""
        settings = {k: v for k, v in asdict(self).items() if k != "world"}
        for name in ("projector", "lora_projector"):  # settings that change neither weights nor data order
            if settings[name] is not None:
                settings[name] = {k: v for k, v in settings[name].items() if k not in COSMETIC}
        payload = {"world": self.world.fingerprint(), "settings": settings, "version": DEMO_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Bump when the demo's configurations or the way a projector is trained change meaning.
# 3: inline, lstsq and text + LoRA rows, the controls, pairs at the same budget; 4: the plan-token-embedding controls
# embed the plan's tokens only (no end of turn, no EOS padding); 5: the text-LoRA executor's initial weights seeded.
DEMO_VERSION = "demo-5"


def demo_settings(*, quick: bool = False, seed: int = 0) -> DemoSettings:
    """The default demo, or the ``--quick`` one (a small world whose models learn little; for tests)."""
    if quick:
        quick_training = ProjectorTrainingConfig(
            lr=3e-3, warmup_steps=5, epochs=1, batch_size=16, max_steps=20, eval_every=10, save_every=10,
            mixed_precision="no", seed=seed, eval_batch_size=32, max_new_tokens=12, decay_biases_and_norms=True,
        )  # fmt: skip
        return DemoSettings(
            world=quick_config(seed),
            projector=quick_training,
            lora_projector=replace(quick_training, lora=True, lora_r=4),
            projector_questions=160,
            projector_hidden=64,
            step_budgets=(8, 4),
            denoise_fractions=(0.5,),
            prefix_steps=50,
        )
    # 8 epochs (504 steps), validated every 50. At 4 epochs (252 steps) the seed-0 projectors were still in a
    # transition (README): under ATEN_CPU_CAPABILITY=default the mixture projector's held-out loss ended at 0.318
    # instead of 0.235 and its 8-step accuracy at 32.9% instead of 85.0%. The demo reports each run's
    # last-quarter drop (toy/curves.py).
    training = ProjectorTrainingConfig(
        lr=1e-3, warmup_steps=30, epochs=8, batch_size=32, eval_every=50, save_every=100,
        mixed_precision="no", seed=seed, eval_batch_size=64, max_new_tokens=16,
        decay_biases_and_norms=True,  # as when the README's table was made (the trainer's default now spares them)
    )  # fmt: skip
    return DemoSettings(
        world=WorldConfig(seed=seed),
        projector=training,
        lora_projector=replace(training, lora=True),
        projector_questions=2000,
    )


def training_jobs(artifacts: WorldArtifacts, settings: DemoSettings) -> list[TrainingJob]:
    """Every recipe's projector, then (when the demo trains LoRA) the text-LoRA executor under :data:`TEXT_LORA`."""
    jobs = [
        TrainingJob(
            recipe.name,
            artifacts,
            settings.training_config(recipe),
            settings.projector_questions,
            settings.batch_size,
            settings.projector_key(recipe),
            recipe=recipe,
            hidden_dim=settings.projector_hidden,
        )
        for recipe in settings.recipes()
    ]
    if settings.lora_projector is not None:
        jobs.append(
            TrainingJob(
                TEXT_LORA,
                artifacts,
                settings.lora_projector,
                settings.projector_questions,
                settings.batch_size,
                settings.text_lora_key(),
                settings=tuple(settings.plan_settings()),
            )
        )
    return jobs


def train_demo_projectors(
    artifacts: WorldArtifacts, settings: DemoSettings, *, progress: bool = True, workers: int = 1
) -> dict[str, Path]:
    """Train (or resume, or reuse) every recipe's projector; returns their directories by recipe name, and the
    text-LoRA executor's under :data:`TEXT_LORA` (when the demo trains LoRA). ``workers`` > 1 trains that many at
    once in worker processes (the same weights: :mod:`latent_darm.toy.training_jobs`)."""
    return run_jobs(training_jobs(artifacts, settings), workers=workers, progress=progress)


# ----------------------------------------------------------------------------------------------------------------
# The configurations
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfiguration:
    """One row of the demo's table: a label, the pipeline spec (``build_pipeline``'s layout) and, for the sweep's
    DDLM→ARM rows, its place in the forward-pass figure (series name and planner setting)."""

    label: str
    spec: dict[str, Any]
    series: str | None = None
    setting: PlanSetting | None = None
    # A control row's pipeline, made from the one ``spec`` builds (which ``spec`` still describes, with "control").
    control: Callable[[Pipeline], Pipeline] | None = None

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.label.lower()).strip("-").replace("--", "-")


def _ddlm(model: Path, length: int, block: int, setting: PlanSetting | None = None) -> DiffusionRole:
    steps = length if setting is None else setting.steps
    fraction = 1.0 if setting is None else setting.denoise_fraction
    return diffusion_role(str(model), length, steps, block, None, "none", denoise_fraction=fraction)


def _arm(model: Path, max_new_tokens: int) -> AutoregressiveRole:
    return autoregressive_role(str(model), max_new_tokens, 1.0)


def _spec(
    kind: str,
    planner: Role | None,
    executor: Role,
    *,
    projector: Path | None = None,
    chain_of_thought: bool = False,
) -> dict[str, Any]:
    path = None if projector is None else str(projector)
    return spec_from_roles(kind, planner, executor, projector=path, chain_of_thought=chain_of_thought)


# The figure's series: label stem → (recipe, executor role); text has no recipe (text + LoRA: its executor).
SERIES = {
    "text DDLM→ARM": (None, "executor"),
    "latent DDLM→ARM": (MATCHED, "executor"),
    "latent DDLM→ARM, inline": (INLINE, "executor"),
    "text DDLM→ARM + LoRA": (None, TEXT_LORA),
    "latent DDLM→ARM, mixture projector": (MIXTURE, "executor"),
    "latent DDLM→ARM + LoRA": (LORA, "executor"),
    "latent DDLM→ARM, plan-prefix executor": (PREFIX, PREFIX_EXECUTOR),
}


def demo_configurations(
    artifacts: WorldArtifacts, projectors: dict[str, Path], settings: DemoSettings
) -> list[DemoConfiguration]:
    """Executor alone (direct, CoT), planner alone, the four text pairings, then the DDLM→ARM sweep: text and
    every latent variant under every planner setting (full budget first)."""
    c = artifacts.config
    ddlm, arm = artifacts.planner_dir, artifacts.executor_dir
    plan_arm = _arm(arm, c.plan_length)
    answer_ddlm = _ddlm(ddlm, c.answer_length, c.answer_length)
    answer_arm = _arm(arm, settings.answer_tokens)
    plan_ddlm = _ddlm(ddlm, c.plan_length, c.block_length)
    configurations = [
        DemoConfiguration("ARM direct", _spec("arm", None, answer_arm)),
        DemoConfiguration("ARM CoT", _spec("arm", None, _arm(arm, settings.cot_tokens), chain_of_thought=True)),
        DemoConfiguration("DDLM alone", _spec("ddlm", None, answer_ddlm)),
        DemoConfiguration("text ARM→DDLM", _spec("text", plan_arm, answer_ddlm)),
        DemoConfiguration("text ARM→ARM", _spec("text", plan_arm, answer_arm)),
        DemoConfiguration("text DDLM→DDLM", _spec("text", plan_ddlm, answer_ddlm)),
    ]
    full = settings.step_budgets[0]
    for setting in settings.plan_settings():
        planner = _ddlm(ddlm, c.plan_length, c.block_length, setting)
        for stem, (recipe, role) in SERIES.items():
            if role == TEXT_LORA and TEXT_LORA not in projectors:
                continue
            role = settings.prefix_executor_name if role == PREFIX_EXECUTOR else role
            model = projectors[TEXT_LORA] if role == TEXT_LORA else artifacts.directory / role
            executor = _arm(model, settings.answer_tokens)
            label = f"{stem}{setting.suffix(full)}"
            if recipe is None:
                spec = _spec("text", planner, executor)
            else:
                name = f"{recipe}-{setting.key}" if recipe in (MATCHED, INLINE) else recipe
                if name not in projectors:
                    continue  # a recipe this demo does not train (no LoRA settings, no plan-prefix executor)
                spec = _spec("latent", planner, executor, projector=projectors[name])
            configurations.append(DemoConfiguration(label, spec, stem, setting))
        if setting == settings.plan_settings()[0]:
            configurations += full_budget_extras(artifacts, projectors, settings, planner)
    return configurations


def full_budget_extras(
    artifacts: WorldArtifacts, projectors: dict[str, Path], settings: DemoSettings, planner: dict[str, Any]
) -> list[DemoConfiguration]:
    """At the full planner budget: the training-free lstsq map (inline), and the controls — gold-plan text,
    plan-token embeddings at the prefix and inline slots (the channel's ceiling), latents replaced by noise."""
    executor = _arm(artifacts.executor_dir, settings.answer_tokens)
    matched = projectors[f"{MATCHED}-{settings.plan_settings()[0].key}"]
    rows = []
    if LSTSQ in projectors:
        spec = _spec("latent", planner, executor, projector=projectors[LSTSQ])
        rows.append(DemoConfiguration("latent DDLM→ARM, lstsq map (no training), inline", spec))
    gold = artifacts.problems("test")
    text = _spec("text", planner, executor) | {"control": "gold plan"}
    rows.append(
        DemoConfiguration("control: gold plan text → ARM", text, control=partial(gold_plan_pipeline, problems=gold))
    )
    for placement in ("prefix", "inline"):
        spec = _spec("latent", planner, executor, projector=matched) | {
            "control": f"plan-token embeddings, {placement}"
        }
        rows.append(
            DemoConfiguration(
                f"control: plan-token embeddings, {placement}",
                spec,
                control=partial(plan_embedding_pipeline, placement=placement),
            )
        )
    noise = _spec("latent", planner, executor, projector=matched) | {"latent_noise": NOISE}
    rows.append(DemoConfiguration("control: latent DDLM→ARM, latents replaced by noise", noise))
    return rows


def demo_pairs(configurations: list[DemoConfiguration]) -> list[tuple[str, str]]:
    """The paired tests the demo reports: every latent row of the sweep against text DDLM→ARM at the same planner
    setting, and latent + LoRA against text + LoRA there too; at the full budget the lstsq row and the plan-token
    embeddings against text, and the noise control against the latent row it is made from."""
    by_series = {(c.series, c.setting): c.label for c in configurations if c.series is not None}
    pairs = []
    for c in configurations:
        if c.series is None or not c.series.startswith("latent") or ("text DDLM→ARM", c.setting) not in by_series:
            continue
        pairs.append((c.label, by_series["text DDLM→ARM", c.setting]))
        if c.series == "latent DDLM→ARM + LoRA" and ("text DDLM→ARM + LoRA", c.setting) in by_series:
            pairs.append((c.label, by_series["text DDLM→ARM + LoRA", c.setting]))
    text, latent = configurations_at_full_budget(configurations)
    for c in configurations:
        if c.series is None and c.spec.get("kind") == "latent" and text is not None:
            noised = bool(c.spec.get("latent_noise"))
            if not noised or latent is not None:
                pairs.append((c.label, latent if noised else text))  # type: ignore[arg-type]
    return pairs


def configurations_at_full_budget(configurations: list[DemoConfiguration]) -> tuple[str | None, str | None]:
    """The labels of text and latent DDLM→ARM at the full planner budget (the sweep's first setting)."""
    text = next((c for c in configurations if c.series == "text DDLM→ARM"), None)
    latent = next((c for c in configurations if c.series == "latent DDLM→ARM"), None)
    return (text.label if text else None), (latent.label if latent else None)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DemoOutcome:
    """What a demo run produced: the output directory, the report files, one loaded run per configuration (with
    its records), the world and projectors it used, its fingerprint, and seconds per phase."""

    out_dir: Path
    report: list[Path]
    runs: list[Run]
    summaries: dict[str, EvalSummary]
    world: WorldArtifacts
    projectors: dict[str, Path]
    fingerprint: str
    seconds: dict[str, float] = field(default_factory=dict)
    curves: list[Curve] = field(default_factory=list)  # the trained projectors' held-out loss curves


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
    spec = {k: v for k, v in configuration.spec.items() if k != "control"}
    pipeline = build_pipeline(spec, models)
    if configuration.control is not None:
        pipeline = configuration.control(pipeline)
    directory = out_dir / RUNS_DIR / configuration.slug
    return evaluate(pipeline, examples, directory, batch_size=settings.batch_size, config=config, progress=progress)


_WORKER_MODELS: ModelCache | None = None  # a worker process's models, kept for its next configurations


def _evaluate_in_worker(job: tuple[WorldArtifacts, DemoConfiguration, Path, DemoSettings]) -> EvalSummary:
    global _WORKER_MODELS
    world, configuration, out_dir, settings = job
    with single_thread():
        register_toy_benchmarks(world)  # a spawned process starts with an empty benchmark registry
        if _WORKER_MODELS is None:
            _WORKER_MODELS = ModelCache(torch.float32, "cpu")
        examples = load_benchmark(TEST_BENCHMARK)
        fingerprint = world.config.fingerprint()
        return evaluate_configuration(
            configuration, examples, out_dir, _WORKER_MODELS, settings, world=fingerprint, progress=False
        )


def evaluate_configurations(
    configurations: list[DemoConfiguration],
    world: WorldArtifacts,
    out_dir: Path,
    settings: DemoSettings,
    *,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, EvalSummary]:
    """Every configuration's summary by label. ``workers`` > 1 evaluates that many at once in spawned processes; each
    configuration's answers do not depend on the process (one thread, its own results directory)."""
    if workers <= 1 or len(configurations) <= 1:
        examples = load_benchmark(TEST_BENCHMARK)
        models = ModelCache(torch.float32, "cpu")
        fingerprint = world.config.fingerprint()
        return {
            c.label: evaluate_configuration(
                c, examples, out_dir, models, settings, world=fingerprint, progress=progress
            )
            for c in configurations
        }
    jobs = [(world, c, out_dir, settings) for c in configurations]
    summaries = map_in_processes(
        _evaluate_in_worker, jobs, workers=workers, description="evaluating configurations", progress=progress
    )
    return {c.label: summary for c, summary in zip(configurations, summaries, strict=True)}


def run_demo(
    settings: DemoSettings,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
    workers: int = 1,
) -> DemoOutcome:
    """Build or reuse the world and the projectors, evaluate every configuration (both ``workers`` at a time), write
    the report and the forward-pass figure."""
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    with single_thread():  # tiny models: one thread is faster than two fighting over two cores
        started = time.perf_counter()
        world = build_world(settings.world, cache_dir, progress=progress)
        seconds["world"] = time.perf_counter() - started
        log(f"world {'reused from' if world.reused else 'built in'} {world.directory}")
        register_toy_benchmarks(world)

        if world.config.prefix_executor:
            started = time.perf_counter()
            build_prefix_executor(world, settings.prefix_steps, progress=progress)
            seconds["prefix_executor"] = time.perf_counter() - started

        started = time.perf_counter()
        projectors = train_demo_projectors(world, settings, progress=progress, workers=workers)
        seconds["projectors"] = time.perf_counter() - started
        log(f"projectors: {world.directory}/projector-*")

        started = time.perf_counter()
        configurations = demo_configurations(world, projectors, settings)
        summaries = evaluate_configurations(
            configurations, world, out_dir, settings, workers=workers, progress=progress
        )
        seconds["evaluation"] = time.perf_counter() - started

    directories = [out_dir / RUNS_DIR / c.slug for c in configurations]
    report = write_report(directories, out_dir, pairs=demo_pairs(configurations))
    runs = [load_run(d) for d in directories]
    figure = out_dir / NFE_FIGURE
    plot_accuracy_vs_forward_passes(configurations, runs, figure, f"toy world {settings.fingerprint()}")
    report.append(figure)
    curves = read_curves(projectors)
    if curves:
        plot_curves(curves, out_dir / CURVES_FIGURE, f"projectors of toy world {settings.fingerprint()}")
        report.append(out_dir / CURVES_FIGURE)
    record = {
        "fingerprint": settings.fingerprint(),
        "world": {"directory": str(world.directory), "reused": world.reused, "config": asdict(world.config)},
        "projectors": {name: str(path) for name, path in projectors.items()},
        "settings": {k: v for k, v in asdict(settings).items() if k != "world"},
        "seconds": seconds,
        "summaries": {label: summary.to_dict() for label, summary in summaries.items()},
        "projector_curves": {curve.name: curve.to_dict() for curve in curves},
    }
    atomic_write_json(out_dir / DEMO_FILE, record)
    return DemoOutcome(out_dir, report, runs, summaries, world, projectors, settings.fingerprint(), seconds, curves)


def recorded_fingerprint(out_dir: Path) -> str | None:
    """The demo fingerprint an earlier run recorded in ``out_dir``'s :data:`DEMO_FILE`, if any."""
    try:
        return json.loads((out_dir / DEMO_FILE).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
