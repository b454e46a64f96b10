"""Build any pipeline from a JSON-able spec (the layout ``darm eval`` stores in ``config.json``).

Spec::

    {"kind": "arm" | "ddlm" | "text" | "latent",
     "planner": role | None, "executor": role,
     "projector": str | None, "chain_of_thought": bool, "latent_noise": float,
     "prompts": str | None, "dtype": "bfloat16" | "float16" | "float32", "device": "cpu" | "cuda" ...}
    role = {"kind": "ddlm", "model", "gen_length", "steps", "block_length", "threshold", "cache",
            [any other SamplerConfig field: "denoise_fraction", "latent_tokens", "temperature", "remasking", ...]}
         | {"kind": "arm", "model", "max_new_tokens", "repetition_penalty"}

The latent pipeline's planner settings default to those the projector was trained with (its ``planner_sampler``):
a setting the role leaves out (or sets to None) is taken from there; one that differs is used, logged once as a
warning and recorded in the pipeline's ``describe()`` under ``sampler_differs_from_training``.

Each checkpoint is loaded once per process even when two roles name it (an ARM planning for itself). A projector
directory trained with LoRA on the executor holds the adapter in ``adapter/``; the latent pipeline's executor then
gets it merged in (a separate copy, so other roles keep the plain model).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch

from latent_darm.dtypes import CANONICAL_DTYPES, torch_dtype
from latent_darm.errors import ConfigError
from latent_darm.extras import require
from latent_darm.models.executor import CausalExecutor
from latent_darm.models.hub import resolve_checkpoint
from latent_darm.models.planner import DiffusionPlanner
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.prompts import PromptTemplates, load_templates
from latent_darm.pipelines.single import SingleModelPipeline
from latent_darm.pipelines.text import TextPipeline
from latent_darm.pipelines.writers import AutoregressiveWriter, DiffusionWriter, Writer
from latent_darm.sampling import SamplerConfig
from latent_darm.sampling.config import SAMPLER_KEYS

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # inside a projector directory: the executor's LoRA adapter, when one was trained


class ModelCache:
    """Loads each (kind, checkpoint) once."""

    def __init__(self, dtype: torch.dtype, device: str) -> None:
        self.dtype, self.device = dtype, device
        self.loaded: dict[tuple[str, str], Any] = {}

    def diffusion(self, reference: str) -> DiffusionPlanner:
        key = ("ddlm", reference)
        if key not in self.loaded:
            self.loaded[key] = DiffusionPlanner.from_pretrained(reference, dtype=self.dtype, device=self.device)
        return self.loaded[key]

    def autoregressive(self, reference: str, adapter: str | None = None) -> CausalExecutor:
        """The executor; with ``adapter`` (a peft LoRA directory) its own copy with the adapter merged in."""
        key = ("arm", reference) if adapter is None else ("arm+adapter", f"{reference}|{adapter}")
        if key not in self.loaded:
            executor = CausalExecutor.from_pretrained(reference, dtype=self.dtype, device=self.device)
            self.loaded[key] = executor if adapter is None else merge_adapter(executor, adapter)
        return self.loaded[key]


def merge_adapter(executor: CausalExecutor, adapter: str) -> CausalExecutor:
    peft = require("peft", "a projector trained with LoRA")
    model = peft.PeftModel.from_pretrained(executor.model, adapter).merge_and_unload()
    return CausalExecutor(model.eval(), executor.tokenizer, name_or_path=executor.name_or_path)


def sampler_from_role(role: dict[str, Any], planner: DiffusionPlanner | None = None) -> SamplerConfig:
    """The role's sampler settings; with the loaded ``planner``, checked against (and defaulted by) its family. A
    family without blocks ignores the role's ``block_length`` (specs name one for LLaDA's sake; the commands refuse
    an explicit one for such a family before any spec is written)."""
    values = {k: role[k] for k in SAMPLER_KEYS if role.get(k) is not None}
    if planner is None:
        return SamplerConfig(**values)
    if not planner.family.uses_blocks:
        values.pop("block_length", None)
    return planner.sampler_config(**values)


def warn_sampler_differs(projector: str, differs: dict[str, dict[str, Any]]) -> None:
    """One warning naming every setting that differs from the projector's training."""
    if differs:
        changes = ", ".join(f"{k} {v['used']!r} (trained with {v['trained']!r})" for k, v in differs.items())
        logger.warning("projector %s is fed latents from other sampler settings than it was trained on: %s",
                       projector, changes)  # fmt: skip


def writer_from_role(role: dict[str, Any], models: ModelCache, templates: PromptTemplates | None = None) -> Writer:
    kind = role.get("kind")
    if kind == "ddlm":
        planner = models.diffusion(role["model"])
        return DiffusionWriter(planner, sampler_from_role(role, planner))
    if kind == "arm":
        system = (templates or PromptTemplates()).system_prompt
        return AutoregressiveWriter(
            models.autoregressive(role["model"]),
            role["max_new_tokens"],
            role.get("repetition_penalty", 1.0),
            system=system,
        )
    raise ConfigError(f"role kind must be 'ddlm' or 'arm', got {kind!r}")


def build_pipeline(spec: dict[str, Any], models: ModelCache | None = None) -> Pipeline:
    """The pipeline a spec describes, with its models loaded."""
    dtype_name = spec.get("dtype", "float32")
    if dtype_name not in CANONICAL_DTYPES:  # a stored spec holds canonical names only
        raise ConfigError(f"dtype must be one of {', '.join(CANONICAL_DTYPES)}, got {dtype_name!r}")
    models = models or ModelCache(torch_dtype(dtype_name), spec.get("device", "cpu"))
    templates = load_templates(spec.get("prompts"))
    if "system_prompt" in spec:  # --system-prompt / --no-system-turn
        system = spec["system_prompt"]
        if system is not None and not isinstance(system, str):
            raise ConfigError(f"system_prompt must be a string or null, got {type(system).__name__}")
        templates = replace(templates, system_prompt=system)
    kind = spec.get("kind")
    executor = spec.get("executor")
    if not isinstance(executor, dict):
        raise ConfigError("pipeline spec needs an 'executor' role")
    if kind in ("arm", "ddlm"):
        if executor.get("kind") != kind:
            raise ConfigError(f"pipeline {kind!r} needs an executor of kind {kind!r}")
        writer = writer_from_role(executor, models, templates)
        return SingleModelPipeline(writer, bool(spec.get("chain_of_thought")), templates)
    planner = spec.get("planner")
    if not isinstance(planner, dict):
        raise ConfigError(f"pipeline {kind!r} needs a 'planner' role")
    if kind == "text":
        return TextPipeline(
            writer_from_role(planner, models, templates), writer_from_role(executor, models, templates), templates
        )
    if kind == "latent":
        from latent_darm.bridge.projector import Projector, planner_role_for_projector
        from latent_darm.pipelines.latent import LatentPipeline

        if planner.get("kind") != "ddlm" or executor.get("kind") != "arm":
            raise ConfigError("the latent pipeline pairs a ddlm planner with an arm executor")
        if not spec.get("projector"):
            raise ConfigError("the latent pipeline needs a 'projector'")
        diffusion = models.diffusion(planner["model"])
        adapter = resolve_checkpoint(spec["projector"], "projector") / ADAPTER_DIR
        autoregressive = models.autoregressive(executor["model"], str(adapter) if adapter.is_dir() else None)
        projector = Projector.from_pretrained(
            spec["projector"], planner=diffusion, executor=autoregressive, force=bool(spec.get("force_projector"))
        ).to(autoregressive.device)
        planner, differs = planner_role_for_projector(planner, projector.config)
        warn_sampler_differs(spec["projector"], differs)
        return LatentPipeline(
            planner=diffusion,
            projector=projector,
            executor=autoregressive,
            sampler=sampler_from_role(planner, diffusion),
            sampler_differs_from_training=differs,
            max_new_tokens=executor["max_new_tokens"],
            repetition_penalty=executor.get("repetition_penalty", 1.0),
            latent_noise=float(spec.get("latent_noise") or 0.0),
            templates=templates,
        )
    raise ConfigError(f"pipeline kind must be one of arm, ddlm, text, latent; got {kind!r}")
