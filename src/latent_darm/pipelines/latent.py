"""Latent-space collaboration: planner latents → projector → soft tokens read by the executor.

The planner samples its plan as usual, but instead of decoding it we keep the hidden states of the plan positions
from its last forward pass ([L, d_planner]); the projector maps them into the executor's embedding space and the
executor reads them as a prefix of soft tokens before a prompt that holds only the question and the answer format.
The decoded plan is kept for inspection only. ``latent_noise`` > 0 adds Gaussian noise of that size relative to
the latents' RMS: the paper's noised-latents control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM, Plan
from latent_darm.pipelines.base import Accounting, Pipeline, PipelineResult, ProgressCallback, check_questions
from latent_darm.pipelines.prompts import AnswerType, PromptTemplates
from latent_darm.projector.model import Projector
from latent_darm.sampling import SamplerConfig


def add_latent_noise(latents: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """latents + N(0, (scale · RMS(latents))²), per example; [B, L, d] → [B, L, d]."""
    if scale == 0:
        return latents
    rms = latents.float().pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
    return (latents.float() + scale * rms * noise).to(latents.dtype)


def latent_summary(latents: torch.Tensor, layer: int) -> dict[str, Any]:
    """What results files keep of the latents: their shape and scale, not the tensors."""
    return {
        "length": latents.shape[0],
        "dim": latents.shape[1],
        "layer": layer,
        "rms": round(float(latents.float().pow(2).mean().sqrt()), 4) if latents.numel() else 0.0,  # empty plan
    }


@dataclass
class LatentPipeline(Pipeline):
    """DDLM → projector → ARM."""

    planner: DiffusionLM
    projector: Projector
    executor: AutoregressiveLM
    sampler: SamplerConfig
    max_new_tokens: int = 64
    repetition_penalty: float = 1.0
    latent_noise: float = 0.0
    seed: int = 0
    templates: PromptTemplates = field(default_factory=PromptTemplates)
    name: str = "latent"
    sampler_differs_from_training: dict[str, Any] = field(default_factory=dict)
    # False where the projector reads something other than the planner's hidden states (a control's embeddings).
    projects_planner_latents: ClassVar[bool] = True

    def __post_init__(self) -> None:
        layer, rows = self.projector.config.latent_layer, self.projector.config.latent_rows
        # A family whose logits are not shifted has no latent_rows: its plan latents are the plan rows.
        changes = {"hidden_layer": layer, **({"latent_rows": rows} if hasattr(self.sampler, "latent_rows") else {})}
        if any(getattr(self.sampler, k) != v for k, v in changes.items()):
            self.sampler = replace(self.sampler, **changes)
        if self.projects_planner_latents and self.planner.hidden_size != self.projector.config.planner_dim:
            raise ConfigError(
                f"projector expects planner hidden size {self.projector.config.planner_dim}, "
                f"planner has {self.planner.hidden_size}"
            )
        if self.sampler.gen_length != self.projector.config.plan_length:
            raise ConfigError(
                f"projector was trained on plans of {self.projector.config.plan_length} positions; "
                f"gen_length is {self.sampler.gen_length}"
            )
        if self.latent_noise < 0:
            raise ConfigError(f"latent_noise must be ≥ 0, got {self.latent_noise}")

    def plan(self, questions: Sequence[str], batch_size: int) -> list[Plan]:
        prompts = [self.templates.planner_prompt(q) for q in questions]
        return self.planner.generate(prompts, self.sampler, batch_size=batch_size)

    def soft_tokens(self, plans: Sequence[Plan]) -> torch.Tensor | list[torch.Tensor]:
        """What the executor reads for ``plans``: their latents, noised, through the projector ([B, L, d]; a
        subclass whose rows differ in length returns one [L_i, d] per plan, which the executor pads per batch)."""
        latents = torch.stack([p.latents for p in plans if p.latents is not None])
        generator = torch.Generator(device=latents.device).manual_seed(self.seed)
        latents = add_latent_noise(latents, self.latent_noise, generator)
        return self.projector.project(latents, device=self.executor.device, dtype=self.executor.dtype)

    @torch.no_grad()
    def run(
        self,
        questions: Sequence[str],
        answer_type: AnswerType,
        *,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[PipelineResult]:
        check_questions(questions)
        plans = self.plan(questions, batch_size)
        soft = self.soft_tokens(plans)
        placement = self.projector.config.placement
        prompts = [self.templates.soft_token_prompt(q, answer_type, placement) for q in questions]
        answers = self.executor.generate_from_embeddings(
            soft,
            prompts,
            placement=placement,
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            batch_size=batch_size,
            system=self.templates.system_prompt,
        )
        if on_progress is not None:
            on_progress(len(questions))
        layer = self.projector.config.latent_layer
        return [
            PipelineResult(
                question=q,
                output=a.text,
                plan=p.text,
                latent_summary=latent_summary(p.latents, layer) if p.latents is not None else None,
                accounting=Accounting(
                    planner_tokens=self.sampler.gen_length,
                    executor_tokens=len(a.token_ids),
                    planner_forward_passes=p.nfe,
                    executor_forward_passes=a.forward_passes,
                    seconds=p.seconds + a.seconds,
                ),
                truncated=a.truncated,
            )
            for q, p, a in zip(questions, plans, answers, strict=True)
        ]

    def rendered_prompts(self, question: str, answer_type: AnswerType) -> dict[str, str]:
        """The executor's text; the projected plan's soft tokens go before it (prefix) or at the plan marker."""
        prompt = self.templates.soft_token_prompt(question, answer_type, self.projector.config.placement)
        return {
            "planner": self.planner.tokenizer.decode(self.planner.prompt_ids(self.templates.planner_prompt(question))),
            "executor": self.executor.rendered_prompt(prompt, system=self.templates.system_prompt),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "planner": {"model": self.planner.name_or_path, "sampler": self.sampler.to_dict()},
            "projector": self.projector.describe(),
            "executor": {
                "model": self.executor.name_or_path,
                "max_new_tokens": self.max_new_tokens,
                "repetition_penalty": self.repetition_penalty,
            },
            "latent_noise": self.latent_noise,
            "seed": self.seed,
            "templates": self.templates.to_dict(),
            **({"sampler_differs_from_training": self.sampler_differs_from_training}
               if self.sampler_differs_from_training else {}),
        }  # fmt: skip
