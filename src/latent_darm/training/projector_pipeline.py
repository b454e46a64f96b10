"""The two-stage projector training as one function, for ``darm train-projector`` and the toy demo alike.

Stage 1 caches the planner's latents of every question under each sampler setting (a :class:`LatentSource`; the
toy's mixture projectors read several at once); stage 2 trains a projector on them with the resumable trainer, or,
with ``init="lstsq"`` and no training, saves the closed-form map alone. What differs between the callers (their
data, where the caches live, what the projector's provenance records) is in :class:`ProjectorPipelineSettings`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from latent_darm.dtypes import resolve_dtype_name, torch_dtype
from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.prompts import PromptTemplates, load_templates
from latent_darm.progress import progress_bar
from latent_darm.projector.model import Projector, signature_of
from latent_darm.sampling import SamplerConfig
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import LatentCache, build_latent_cache
from latent_darm.training.projector_config import ProjectorTrainingConfig
from latent_darm.training.projector_run import save_projector
from latent_darm.training.projector_trainer import TrainingSummary, train_projector

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass(frozen=True)
class LatentSource:
    """One planner sampler setting whose latents stage 1 caches in ``directory``. ``sampler``: a ready
    :class:`SamplerConfig`, or options the loaded planner's family completes (a hub planner's family is known only
    once it is loaded). ``key`` names the setting in a mixture's example ids (``<id>@<key>``)."""

    key: str
    sampler: SamplerConfig | Mapping[str, Any]
    directory: Path


def family_options(family: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler options for ``family`` (None: not known yet): ``cache`` none and ``latent_rows`` plan are
    passed for every family and dropped where it has no such setting; an explicit ``block_length`` stays, for a
    family without blocks to refuse."""
    from latent_darm.models.family import settings_for

    if family is None:
        return dict(options)
    return {**settings_for(family, options), "block_length": options["block_length"]}


def no_provenance(samplers: Sequence[SamplerConfig]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ProjectorPipelineSettings:
    """Everything the two stages need besides the examples. ``planner`` / ``executor``: checkpoint references;
    ``out``: the resumable run directory; ``dtype``: a name (``auto``: float32 on CPU, bfloat16 on a GPU);
    ``provenance``: the record saved with the projector, from the stage-1 samplers as used."""

    planner: str
    executor: str
    out: Path
    sources: tuple[LatentSource, ...]
    training: ProjectorTrainingConfig
    plan_length: int
    architecture: str = "mlp2_gelu_rmsnorm"
    hidden_dim: int = 1024
    latent_layer: int = -1
    latent_rows: str = "plan"
    placement: str = "prefix"
    init: str = "random"
    ridge: float = 1e-3
    training_free: bool = False  # init lstsq with 0 steps: the map is the projector
    plan_batch_size: int = 8
    dtype: str = "auto"
    prompts: str | None = None
    provenance: Callable[[Sequence[SamplerConfig]], dict[str, Any]] = field(default=no_provenance)
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError(f"projector run {self.out}: no sampler settings")
        if self.init == "lstsq" and len(self.sources) > 1:
            raise ConfigError("--init lstsq fits one sampler setting's latents, not a mixture")


@dataclass(frozen=True)
class ProjectorPipelineOutcome:
    """Where the projector is (None on the other processes of a training-free run) and the training summary (None
    when training-free)."""

    projector_dir: Path | None
    summary: TrainingSummary | None


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


def run_projector_pipeline(
    settings: ProjectorPipelineSettings,
    cached: Sequence[TrainingExample],
    train: Sequence[TrainingExample],
    held_out: Sequence[TrainingExample],
    *,
    accelerator: Accelerator | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ProjectorPipelineOutcome:
    """Stage 1 over ``cached`` (every source), then stage 2 on ``train`` / ``held_out`` (ids as cached with one
    source, ``<id>@<key>`` with several). Both resume. Under ``accelerator`` with several processes, stage 1 splits
    the questions and stage 2 trains data-parallel; without one, a single process on the CPU."""
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    dtype = torch_dtype(resolve_dtype_name(settings.dtype, device.type))
    # Multi-process CPU runs report "cpu:<rank>", which safetensors does not accept as a load device.
    load_device = device if device.type != "cpu" else torch.device("cpu")
    templates = load_templates(settings.prompts)
    planner = DiffusionLM.from_pretrained(settings.planner, dtype=dtype, device=load_device)
    samplers, caches = _stage_one(settings, planner, cached, templates, accelerator)
    planner_side, planner_tokenizer = signature_of(planner), planner.tokenizer
    del planner
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    executor = AutoregressiveLM.from_pretrained(settings.executor, dtype=dtype, device=load_device)
    torch.manual_seed(settings.training.seed)  # the projector's initial weights: same settings, same projector
    projector = Projector.for_pair(
        planner_side,
        executor,
        settings.architecture,
        hidden_dim=settings.hidden_dim,
        plan_length=settings.plan_length,
        latent_layer=settings.latent_layer,
        latent_rows=settings.latent_rows,
        placement=settings.placement,
        # One sampler setting: the projector remembers it, so eval/solve feed it latents made the same way.
        planner_sampler=samplers[0].to_dict() if len(samplers) == 1 else {},
    )
    provenance = settings.provenance(samplers)
    if len(caches) == 1:
        (latents,) = caches.values()
    else:
        latents = MixedLatentCache(caches, settings.out / "latents")  # type: ignore[assignment]
    main = accelerator is None or accelerator.is_main_process
    if settings.init == "lstsq":
        seed_lstsq(projector, executor, planner_tokenizer, latents, train, settings.ridge)
        if main:
            log(f"--init lstsq: ridge map fitted on {len(train)} examples' plan positions")
    if settings.training_free:
        saved = save_projector(projector, None, settings.out, provenance) if main else None  # one writer: a rename
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return ProjectorPipelineOutcome(saved, None)
    summary = train_projector(
        projector,
        executor,
        latents,  # type: ignore[arg-type]
        train,
        held_out,
        settings.out,
        settings.training,
        templates=templates,
        accelerator=accelerator,
        provenance=provenance,
        progress=settings.progress and main,
    )
    return ProjectorPipelineOutcome(Path(summary.projector_dir), summary)


def _stage_one(
    settings: ProjectorPipelineSettings,
    planner: DiffusionLM,
    cached: Sequence[TrainingExample],
    templates: PromptTemplates,
    accelerator: Accelerator | None,
) -> tuple[list[SamplerConfig], dict[str, LatentCache]]:
    """Every source's sampler as used and its latent cache, computed once (split across processes)."""
    if not -1 <= settings.latent_layer <= planner.num_layers:
        raise ConfigError(
            f"--latent-layer must be -1 or 0..{planner.num_layers} for this planner, got {settings.latent_layer}"
        )
    rank, world_size = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    show = settings.progress and rank == 0
    samplers, caches = [], {}
    for source in settings.sources:
        sampler = source.sampler
        if not isinstance(sampler, SamplerConfig):
            sampler = planner.sampler_config(**family_options(planner.family, sampler))
        samplers.append(sampler)
        with progress_bar(show) as bar:
            # Under several processes this bar counts the main process's share only.
            task = bar.add_task(f"stage 1: plan latents {source.key}", total=None if world_size > 1 else len(cached))
            build_latent_cache(
                planner,
                cached,
                source.directory,
                sampler,
                templates,
                batch_size=settings.plan_batch_size,
                rank=rank,
                world_size=world_size,
                on_progress=lambda n, task=task, bar=bar: bar.advance(task, n),
            )
        if accelerator is not None:
            accelerator.wait_for_everyone()
        caches[source.key] = LatentCache.open(source.directory)
    return samplers, caches


def seed_lstsq(
    projector: Projector,
    executor: AutoregressiveLM,
    planner_tokenizer: Any,
    latents: LatentCache,
    train: Sequence[TrainingExample],
    ridge: float,
) -> None:
    """``init="lstsq"``: fit the map on the training examples' cached latents and plan tokens; seed ``projector``."""
    from latent_darm.training.projector_lstsq import ridge_map_from_cache, seed_projector

    keys = [example.id for example in train]
    seed_projector(projector, ridge_map_from_cache(executor, latents, keys, ridge, planner_tokenizer))
    projector.to(executor.device)
