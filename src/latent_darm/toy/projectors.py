"""The demo's projectors: one per planner sampler setting, or one on a mixture of settings; projector only, or with
LoRA on the executor; for the paper-setting executor or the plan-prefix one.

A projector reads the planner's last-layer latents, and those depend on the sampler settings: latents after 2
denoising steps (or after half of the 8 steps, ``denoise_fraction`` 0.5) are not the 8-step latents a projector
trained on the full process has seen. So every latent configuration is evaluated with a projector trained on
latents from the sampler settings it runs with: either its own (``matched``) or one trained on every setting of
the sweep at once (``mixture``). Stage-1 latents are cached once per setting inside the world's cache entry and
shared by every projector that reads them; stage 2 is the project's trainer (``train_projector``), one resumable
run directory per projector.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from latent_darm.errors import ConfigError, DataError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.progress import progress_bar
from latent_darm.projector.model import Projector
from latent_darm.sampling import SamplerConfig
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.world import ToyProblem
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import SPEC_VERSION, LatentCache, build_latent_cache
from latent_darm.training.projector_trainer import ProjectorTrainingConfig, train_projector

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

    def sampler(self, artifacts: WorldArtifacts, hidden_layer: int | None = LATENT_LAYER) -> SamplerConfig:
        base = artifacts.plan_sampler().to_dict()
        return SamplerConfig(
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


class MixedLatentCache:
    """Several latent caches read as one: key ``<id>@<setting>`` reads ``<id>`` from that setting's cache. What the
    trainer needs of a cache: membership, ``load``, ``directory`` and ``spec``."""

    def __init__(self, caches: dict[str, LatentCache], directory: Path) -> None:
        self.caches, self.directory = caches, directory
        self.spec = {"mixture": {key: cache.spec for key, cache in sorted(caches.items())}}

    def _split(self, key: str) -> tuple[LatentCache, str]:
        example, _, setting = key.rpartition("@")
        if setting not in self.caches:
            raise ConfigError(f"no latent cache for setting {setting!r} (example {key!r})")
        return self.caches[setting], example

    def __contains__(self, key: str) -> bool:
        example, _, setting = key.rpartition("@")
        return setting in self.caches and example in self.caches[setting]

    def load(self, keys: Sequence[str]) -> torch.Tensor:
        return torch.cat([cache.load([example]) for cache, example in map(self._split, keys)])


def latent_cache(
    artifacts: WorldArtifacts,
    planner: DiffusionLM,
    setting: PlanSetting,
    problems: Sequence[ToyProblem],
    *,
    batch_size: int,
    progress: bool,
    tag: str = "",
) -> LatentCache:
    """The planner's latents under ``setting`` for ``problems``, cached in the world's entry (resumable; shared
    by every projector that reads this setting). ``tag`` names a separate cache (one rebuilt with plan token ids,
    when a world's older cache lacks them)."""
    sampler = setting.sampler(artifacts)
    examples = [training_example(p) for p in problems]
    ids = hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()[:12]
    # Named by the spec version too: a world cached before it keeps its old caches and makes new ones beside them.
    directory = artifacts.directory / "latents" / f"{setting.key}-{ids}-v{SPEC_VERSION}{tag}"
    with progress_bar(progress, remaining=False) as bar:
        task = bar.add_task(f"planner latents {setting.key}", total=len(examples))
        return build_latent_cache(
            planner,
            examples,
            directory,
            sampler,
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
    planner = artifacts.load_planner()
    caches = {
        s.key: latent_cache(artifacts, planner, s, [*train_problems, *held_problems], batch_size=batch_size,
                            progress=progress)
        for s in recipe.settings
    }  # fmt: skip
    if len(recipe.settings) == 1:
        (cache,) = caches.values()
        train = [training_example(p) for p in train_problems]
        held_out = [training_example(p) for p in held_problems]
    else:
        cache = MixedLatentCache(caches, run_dir / "latents")  # type: ignore[assignment]
        k = len(recipe.settings)
        train = [training_example(p, recipe.settings[i % k]) for i, p in enumerate(train_problems)]
        held_out = [training_example(p, s) for p in held_problems for s in recipe.settings]
    executor = AutoregressiveLM.from_pretrained(executor_dir)
    torch.manual_seed(config.seed)  # the projector's initial weights: same settings, same projector
    # One sampler setting: the projector remembers it, so eval/solve feed it latents made the same way.
    stored_sampler = recipe.settings[0].sampler(artifacts).to_dict() if len(recipe.settings) == 1 else {}
    projector = Projector.for_pair(
        planner,
        executor,
        hidden_dim=hidden_dim,
        plan_length=artifacts.config.plan_length,
        latent_layer=LATENT_LAYER,
        planner_sampler=stored_sampler,
        placement=recipe.placement,
    )
    if recipe.lstsq:
        if len(recipe.settings) != 1:
            raise ConfigError(f"projector {recipe.name}: the lstsq map is fitted for one sampler setting")
        try:
            cache.plan_tokens([train[0].id])  # type: ignore[union-attr]
        except DataError:  # a cache made before plan token ids were stored: make one that has them
            cache = latent_cache(artifacts, planner, recipe.settings[0], [*train_problems, *held_problems],
                                 batch_size=batch_size, progress=progress, tag="-tokens")  # fmt: skip
        return _save_lstsq(projector, executor, cache, train, run_dir)  # type: ignore[arg-type]
    provenance = {
        "world": artifacts.config.fingerprint(),
        "recipe": recipe.to_dict(),
        "samplers": [s.sampler(artifacts).to_dict() for s in recipe.settings],
        "data": "toy train split",
    }
    summary = train_projector(
        projector,
        executor,
        cache,  # type: ignore[arg-type]
        train,
        held_out,
        run_dir,
        replace(config, lora=recipe.lora),
        templates=PromptTemplates(),
        provenance=provenance,
        progress=progress,
    )
    return Path(summary.projector_dir)


def _save_lstsq(
    projector: Projector, executor: AutoregressiveLM, cache: LatentCache, train: list[TrainingExample], run_dir: Path
) -> Path:
    """The training-free projector: the ridge map fitted on the training examples' latents and decoded plan tokens
    (``darm train-projector --init lstsq --max-steps 0``), saved once as ``run_dir/projector``."""
    from latent_darm.training.projector_lstsq import lstsq_projector, plan_token_embeddings

    final = run_dir / "projector"
    if (final / "config.json").exists():
        return final
    keys = [example.id for example in train]
    targets = plan_token_embeddings(executor, cache.plan_tokens(keys))
    lstsq_projector(projector, cache.load(keys).float(), targets, ridge=1e-3)
    staging = run_dir / ".projector.partial"
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # a killed save's leftovers
    projector.save_pretrained(staging)
    staging.rename(final)
    return final


def recipe_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
