"""Build any pipeline from its spec (:class:`~latent_darm.pipelines.spec.PipelineSpec`, or its JSON layout as
``darm eval`` stores it in ``config.json``).

The latent pipeline's planner settings default to those the projector was trained with (its ``planner_sampler``):
a setting the role leaves out (or sets to None) is taken from there; one that differs is used, logged once as a
warning and recorded in the pipeline's ``describe()`` under ``sampler_differs_from_training``.

The latent pipeline's planner settings default to those the projector was trained with (its ``planner_sampler``):
a setting the role leaves out (or sets to None) is taken from there; one that differs is used, logged once as a
warning and recorded in the pipeline's ``describe()`` under ``sampler_differs_from_training``.

Each checkpoint is loaded once per process even when two roles name it (an ARM planning for itself). A projector
directory trained with LoRA on the executor holds the adapter in ``adapter/``; the latent pipeline's executor then
gets it merged in (a separate copy, so other roles keep the plain model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latent_darm.dtypes import torch_dtype
from latent_darm.errors import CheckpointError
from latent_darm.extras import require
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.chat import uses_chat_template
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.family import settings_for
from latent_darm.models.hub import resolve_checkpoint
from latent_darm.models.safetensors_files import PICKLE_PATTERNS, pickle_only_message, tensor_names
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.pipelines.single import SingleModelPipeline
from latent_darm.pipelines.spec import AutoregressiveRole, DiffusionRole, PipelineSpec, Role
from latent_darm.pipelines.text import TextPipeline
from latent_darm.pipelines.writers import AutoregressiveWriter, DiffusionWriter, Writer
from latent_darm.sampling import SamplerConfig

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # inside a projector directory: the executor's LoRA adapter, when one was trained


class ModelCache:
    """Loads each (kind, checkpoint) once."""

    def __init__(self, dtype: torch.dtype, device: str) -> None:
        self.dtype, self.device = dtype, device
        self.loaded: dict[tuple[str, str], Any] = {}

    def diffusion(self, reference: str) -> DiffusionLM:
        key = ("ddlm", reference)
        if key not in self.loaded:
            self.loaded[key] = DiffusionLM.from_pretrained(reference, dtype=self.dtype, device=self.device)
        return self.loaded[key]

    def autoregressive(self, reference: str, adapter: str | None = None) -> AutoregressiveLM:
        """The executor; with ``adapter`` (a peft LoRA directory) its own copy with the adapter merged in."""
        key = ("arm", reference) if adapter is None else ("arm+adapter", f"{reference}|{adapter}")
        if key not in self.loaded:
            executor = AutoregressiveLM.from_pretrained(reference, dtype=self.dtype, device=self.device)
            self.loaded[key] = executor if adapter is None else merge_adapter(executor, adapter)
        return self.loaded[key]


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter(adapter: Path) -> None:
    """Refuse a LoRA adapter directory peft would read a pickle from (``adapter_model.bin``: pickle can run code
    when loaded), or whose safetensors file is unreadable, with one line naming it, before peft opens anything."""
    weights = adapter / ADAPTER_WEIGHTS
    if weights.is_file():
        tensor_names(weights)  # a truncated or foreign file is a one-line CheckpointError
        return
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in adapter.glob(pattern))
    if pickles:
        raise CheckpointError(pickle_only_message(adapter, pickles[0]))
    raise CheckpointError(f"LoRA adapter {adapter}: no {ADAPTER_WEIGHTS}")


def merge_adapter(executor: AutoregressiveLM, adapter: str) -> AutoregressiveLM:
    peft = require("peft", "a projector trained with LoRA")
    check_adapter(Path(adapter))
    model = peft.PeftModel.from_pretrained(executor.model, adapter).merge_and_unload()
    return AutoregressiveLM(model.eval(), executor.tokenizer, name_or_path=executor.name_or_path)


def sampler_from_role(role: DiffusionRole | Mapping[str, Any], planner: DiffusionLM | None = None) -> SamplerConfig:
    """The role's sampler settings (a role object in the JSON layout is checked first); with the loaded
    ``planner``, its family's, read as stored (``settings_for``: a family without blocks ignores the role's
    ``block_length``, which specs name for LLaDA's sake; the commands refuse an explicit one for such a family before
    any spec is written)."""
    if not isinstance(role, DiffusionRole):
        role = DiffusionRole.from_dict(role, "role.")
    if planner is None:
        return role.sampler.config()
    return planner.sampler_config(**settings_for(planner.family, role.sampler.values()))


def warn_sampler_differs(projector: str, differs: dict[str, dict[str, Any]]) -> None:
    """One warning naming every setting that differs from the projector's training."""
    if differs:
        changes = ", ".join(f"{k} {v['used']!r} (trained with {v['trained']!r})" for k, v in differs.items())
        logger.warning("projector %s is fed latents from other sampler settings than it was trained on: %s",
                       projector, changes)  # fmt: skip


def chat_prompts(executor: AutoregressiveLM, role: AutoregressiveRole, name: str) -> bool:
    """Whether the ``name`` role's prompts go through its chat template (the role's ``chat_template`` mode)."""
    return uses_chat_template(executor.tokenizer, role.chat_template, name, executor.name_or_path)


def writer_from_role(
    role: Role, models: ModelCache, templates: PromptTemplates | None = None, name: str = "executor"
) -> Writer:
    if isinstance(role, DiffusionRole):
        planner = models.diffusion(role.model)
        return DiffusionWriter(planner, sampler_from_role(role, planner))
    system = (templates or PromptTemplates()).system_prompt
    model = models.autoregressive(role.model)
    chat = chat_prompts(model, role, name)
    return AutoregressiveWriter(model, role.max_new_tokens, role.repetition_penalty, system=system, chat=chat)


def build_pipeline(spec: PipelineSpec | Mapping[str, Any], models: ModelCache | None = None) -> Pipeline:
    """The pipeline a spec describes, with its models loaded; a JSON layout is checked first
    (:meth:`PipelineSpec.from_dict`)."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.from_dict(spec)
    models = models or ModelCache(torch_dtype(spec.dtype), spec.device)
    templates = spec.templates.load()
    executor, planner = spec.executor, spec.planner
    if planner is None:
        return SingleModelPipeline(writer_from_role(executor, models, templates), spec.chain_of_thought, templates)
    if spec.kind == "text":
        return TextPipeline(
            writer_from_role(planner, models, templates, "planner"),
            writer_from_role(executor, models, templates),
            templates,
        )
    from latent_darm.pipelines.builder import planner_role_for_projector
    from latent_darm.pipelines.latent import LatentPipeline
    from latent_darm.projector.model import Projector

    # The spec checked the pairing: a ddlm planner, an arm executor and a projector.
    assert isinstance(planner, DiffusionRole) and isinstance(executor, AutoregressiveRole) and spec.projector
    diffusion = models.diffusion(planner.model)
    adapter = resolve_checkpoint(spec.projector.path, "projector") / ADAPTER_DIR
    autoregressive = models.autoregressive(executor.model, str(adapter) if adapter.is_dir() else None)
    chat_prompts(autoregressive, executor, "executor")  # required: refused here; none: refused by the spec
    projector = Projector.from_pretrained(
        spec.projector.path, planner=diffusion, executor=autoregressive, force=spec.projector.force
    ).to(autoregressive.device)
    filled, differs = planner_role_for_projector(planner.to_dict(), projector.config)
    warn_sampler_differs(spec.projector.path, differs)
    return LatentPipeline(
        planner=diffusion,
        projector=projector,
        executor=autoregressive,
        sampler=sampler_from_role(filled, diffusion),
        sampler_differs_from_training=differs,
        max_new_tokens=executor.max_new_tokens,
        repetition_penalty=executor.repetition_penalty,
        latent_noise=spec.projector.latent_noise,
        templates=templates,
    )
