"""The demo's control rows: what the latent and text channels can reach at best, and proof that latent carries the plan.

- **gold-plan text** (:class:`GoldPlanWriter`): the world's gold plan in the text executor's prompt, no planner run:
  the executor's ceiling given a perfect plan.
- **plan-token embeddings** (:class:`PlanEmbeddingPipeline`): the planner samples as in latent DDLM→ARM, but the soft
  tokens are the executor's own input embeddings of the plan's tokens (an identity projector on them), at the
  placement asked for: the ceiling of a projector that learned to imitate the decoded plan. The plan's tokens are
  the executor's tokens of the plan text the text pipeline writes into its prompt (the canvas cut at its first end
  of turn / EOS, specials skipped), never the canvas's end-of-turn and EOS padding, so a row has as many soft tokens
  as its plan has tokens; inline, the executor then reads what text DDLM→ARM reads at the plan's place.
- **latents replaced by noise** is an ordinary latent spec (``latent_noise`` large), built by the factory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch

from latent_darm.errors import DataError
from latent_darm.models.diffusion_lm import Plan
from latent_darm.pipelines.base import Pipeline
from latent_darm.pipelines.latent import LatentPipeline, add_latent_noise
from latent_darm.pipelines.text import TextPipeline
from latent_darm.pipelines.writers import Written
from latent_darm.projector.model import Projector, ProjectorConfig
from latent_darm.toy.world import ToyProblem

GOLD = "gold"


@dataclass
class GoldPlanWriter:
    """A "planner" that writes each question's gold plan (found by the question's text in the planner prompt):
    no forward passes, its plan's word count as tokens."""

    plans: dict[str, str]
    kind: str = GOLD

    @classmethod
    def for_problems(cls, problems: Sequence[ToyProblem]) -> GoldPlanWriter:
        return cls({p.question: p.plan for p in problems})

    def write(self, prompts: Sequence[str], batch_size: int) -> list[Written]:
        return [self._written(prompt) for prompt in prompts]

    def _written(self, prompt: str) -> Written:
        hits = [plan for question, plan in self.plans.items() if question in prompt]
        if len(hits) != 1:
            raise DataError(f"gold plan: {len(hits)} world questions match the prompt {prompt[:80]!r}")
        return Written(hits[0], len(hits[0].split()), 0, 0.0)

    def render(self, prompt: str) -> str:
        return prompt

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "plans": len(self.plans)}


def gold_plan_pipeline(text: Pipeline, problems: Sequence[ToyProblem]) -> TextPipeline:
    """``text`` (a text pipeline) with its planner replaced by the gold plans of ``problems``."""
    assert isinstance(text, TextPipeline)
    return replace(text, planner=GoldPlanWriter.for_problems(problems))


@dataclass
class PlanEmbeddingPipeline(LatentPipeline):
    """Latent DDLM→ARM whose soft tokens are the executor's embeddings of the plan's tokens (see the module doc)."""

    name: str = "latent-plan-embeddings"
    projects_planner_latents: ClassVar[bool] = False  # its identity projector reads executor embeddings

    def plan_token_ids(self, plan: Plan) -> list[int]:
        """The executor's ids of ``plan.text``, no specials added: the plan tokens the text channel shows."""
        return list(self.executor.tokenizer(plan.text, add_special_tokens=False)["input_ids"])

    def plan(self, questions: Sequence[str], batch_size: int) -> list[Plan]:
        plans = super().plan(questions, batch_size)
        with torch.no_grad():
            return [replace(p, latents=self.executor.embed(self.plan_token_ids(p))) for p in plans]

    def soft_tokens(self, plans: Sequence[Plan]) -> list[torch.Tensor]:
        """One [L_i, d] row per plan (plans differ in length); noise, if asked, is drawn per row in plan order."""
        generator = torch.Generator(device=self.executor.device).manual_seed(self.seed)
        rows = []
        for p in plans:
            assert p.latents is not None
            latents = add_latent_noise(p.latents[None], self.latent_noise, generator)
            rows.append(self.projector.project(latents, device=self.executor.device, dtype=self.executor.dtype)[0])
        return rows


def plan_embedding_pipeline(latent: Pipeline, placement: str) -> PlanEmbeddingPipeline:
    """``latent`` (a latent pipeline: its planner, sampler and executor) reading plan-token embeddings at
    ``placement`` through an identity projector."""
    assert isinstance(latent, LatentPipeline)
    trained = latent.projector.config
    dim = trained.executor_dim
    identity = ProjectorConfig(
        planner_dim=dim,
        executor_dim=dim,
        architecture="identity",
        plan_length=trained.plan_length,
        latent_layer=trained.latent_layer,
        latent_rows=trained.latent_rows,
        placement=placement,
    )
    values = {f.name: getattr(latent, f.name) for f in fields(latent) if f.init and f.name != "name"}
    values["projector"] = Projector(identity)
    return PlanEmbeddingPipeline(**values)
