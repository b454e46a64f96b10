"""The demo's projectors: one per planner sampler setting, or one on a mixture of settings; projector only, or with
LoRA on the executor; for the paper-setting executor or the plan-prefix one.

A projector reads the planner's last-layer latents, and those depend on the sampler settings: latents after 2
denoising steps (or after half of the 8 steps, ``denoise_fraction`` 0.5) are not the 8-step latents a projector
trained on the full process has seen. So every latent configuration is evaluated with a projector trained on
latents from the sampler settings it runs with: either its own (``matched``) or one trained on every setting of
the sweep at once (``mixture``). Stage-1 latents are cached once per setting inside the world's cache entry and
shared by every projector that reads them; both stages are the project's projector pipeline
(:func:`~latent_darm.training.projector_pipeline.run_projector_pipeline`, as ``darm train-projector`` runs them), one
resumable run directory per projector.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latent_darm.errors import ConfigError
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.progress import progress_bar
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.world import ToyProblem
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import SPEC_VERSION, LatentCache, build_latent_cache
from latent_darm.training.projector_pipeline import LatentSource, ProjectorPipelineSettings, run_projector_pipeline
from latent_darm.training.projector_trainer import ProjectorTrainingConfig

LATENT_LAYER = -1  # the paper's latents: last layer, after the final norm


@dataclass(frozen=True)
class PlanSetting:
    """How the planner samples a plan: ``steps`` denoising steps over the canvas, stopped after
    ``denoise_fraction`` of them (the rest of the canvas stays masked; the latents are those of the last pass)."""

    steps: int
    denoise_fraction: float = 1.0

    @property
    def forward_passes(self) -> int:
        return max(1, round(self.denoise_fraction * self.steps))

    @property
    def key(self) -> str:
        return f"s{self.steps}" if self.denoise_fraction == 1.0 else f"s{self.steps}-f{self.denoise_fraction:g}"

    def suffix(self, full_steps: int) -> str:
        """The label suffix of a configuration run with this setting ('' for the full budget)."""
        if self.denoise_fraction != 1.0:
            return f", denoised {self.denoise_fraction:g} of {self.steps} steps"
        return "" if self.steps == full_steps else f", {self.steps} steps"

    def sampler(self, artifacts: WorldArtifacts, hidden_layer: int | None = LATENT_LAYER) -> LLaDASamplerConfig:
        base = artifacts.plan_sampler().to_dict()
        return LLaDASamplerConfig(
            **{**base, "steps": self.steps, "denoise_fraction": self.denoise_fraction, "hidden_layer": hidden_layer}
        )


@dataclass(frozen=True)
class ProjectorRecipe:
    """One projector to train: for which executor (its directory in the world's entry), with or without LoRA, on
    which sampler settings' latents, with its soft tokens at which ``placement``; ``lstsq`` fits the closed-form
    map (latents → the executor's embeddings of the decoded plan tokens) and trains nothing."""

    name: str
    executor: str
    lora: bool
    settings: tuple[PlanSetting, ...]
    placement: str = "prefix"
    lstsq: bool = False

    def to_dict(self) -> dict[str, Any]:
        extra = {"placement": self.placement} if self.placement != "prefix" else {}  # prefix recipes keep their key
        return {
            "name": self.name,
            "executor": self.executor,
            "lora": self.lora,
            "settings": [s.key for s in self.settings],
            **extra,
            **({"lstsq": True} if self.lstsq else {}),
        }


def training_example(problem: ToyProblem, setting: PlanSetting | None = None) -> TrainingExample:
    """A world problem as a projector training pair: graded on the answer, trained on the executor's reply. With
    ``setting``, the id names it too (one example per setting in a mixture)."""
    return TrainingExample(
        id=problem.id if setting is None else f"{problem.id}@{setting.key}",
        question=problem.question,
        target=str(problem.answer),
        answer_type="integer",
        source="toy",
        reply=problem.last_step,
    )


def projector_problems(artifacts: WorldArtifacts, n: int) -> tuple[list[ToyProblem], list[ToyProblem]]:
    """(train, held out): a seeded sample of ``n`` train-split problems across all levels, and the validation
    split (which picks the best checkpoint; the splits never share a question)."""
    pool = artifacts.problems("train")  # ordered by level: draw a seeded sample across all levels
    picked = random.Random(f"projector:{artifacts.config.seed}").sample(pool, min(n, len(pool)))
    return picked, artifacts.problems("validation")


def latent_directory(artifacts: WorldArtifacts, setting: PlanSetting, examples: Sequence[TrainingExample]) -> Path:
    """Where the planner's latents under ``setting`` for ``examples`` are cached: in the world's entry, shared by
    every projector that reads this setting."""
    ids = hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()[:12]
    # Named by the spec version too: a world cached before it keeps its old caches and makes new ones beside them.
    return artifacts.directory / "latents" / f"{setting.key}-{ids}-v{SPEC_VERSION}"


def latent_cache(
    artifacts: WorldArtifacts,
    planner: DiffusionLM,
    setting: PlanSetting,
    problems: Sequence[ToyProblem],
    *,
    batch_size: int,
    progress: bool,
) -> LatentCache:
    """The planner's latents under ``setting`` for ``problems``, in the directory the projector pipeline uses
    (resumable; shared by every projector and the text + LoRA recipe that read this setting)."""
    examples = [training_example(p) for p in problems]
    with progress_bar(progress, remaining=False) as bar:
        task = bar.add_task(f"planner latents {setting.key}", total=len(examples))
        return build_latent_cache(
            planner,
            examples,
            latent_directory(artifacts, setting, examples),
            setting.sampler(artifacts),
            PromptTemplates(),
            batch_size=batch_size,
            on_progress=lambda n: bar.advance(task, n),
        )


def train_recipe(
    artifacts: WorldArtifacts,
    recipe: ProjectorRecipe,
    config: ProjectorTrainingConfig,
    *,
    questions: int,
    hidden_dim: int,
    batch_size: int,
    run_key: str,
    progress: bool = True,
) -> Path:
    """Train (or resume, or reuse) ``recipe``'s projector; returns the projector directory.

    A single-setting recipe trains on the sampled questions under its setting; a mixture on the same questions,
    each under one of its settings in turn, so both cost the same (the mixture sees each setting less often).
    Held out: the validation split under every setting of the recipe.
    """
    if not recipe.settings:
        raise ConfigError(f"projector {recipe.name}: no sampler settings")
    executor_dir = artifacts.directory / recipe.executor
    if not (executor_dir / "config.json").exists():
        raise ConfigError(f"projector {recipe.name}: the world has no {recipe.executor} (see WorldConfig)")
    run_dir = artifacts.directory / f"projector-{recipe.name}-{run_key}"
    train_problems, held_problems = projector_problems(artifacts, questions)
    cached = [training_example(p) for p in [*train_problems, *held_problems]]
    if len(recipe.settings) == 1:
        train = [training_example(p) for p in train_problems]
        held_out = [training_example(p) for p in held_problems]
    else:
        k = len(recipe.settings)
        train = [training_example(p, recipe.settings[i % k]) for i, p in enumerate(train_problems)]
        held_out = [training_example(p, s) for p in held_problems for s in recipe.settings]
    sources = tuple(
        LatentSource(s.key, s.sampler(artifacts), latent_directory(artifacts, s, cached)) for s in recipe.settings
    )
    settings = ProjectorPipelineSettings(
        planner=str(artifacts.planner_dir),
        executor=str(executor_dir),
        out=run_dir,
        sources=sources,
        training=replace(config, lora=recipe.lora),
        plan_length=artifacts.config.plan_length,
        hidden_dim=hidden_dim,
        latent_layer=LATENT_LAYER,
        placement=recipe.placement,
        # lstsq: the training-free ridge map (``darm train-projector --init lstsq --max-steps 0``)
        init="lstsq" if recipe.lstsq else "random",
        training_free=recipe.lstsq,
        plan_batch_size=batch_size,
        provenance=lambda samplers: {
            "world": artifacts.config.fingerprint(),
            "recipe": recipe.to_dict(),
            "samplers": [sampler.to_dict() for sampler in samplers],
            "data": "toy train split",
        },
        progress=progress,
    )
    outcome = run_projector_pipeline(settings, cached, train, held_out)
    assert outcome.projector_dir is not None  # one process: always set (trained or training-free)
    return outcome.projector_dir


def recipe_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
