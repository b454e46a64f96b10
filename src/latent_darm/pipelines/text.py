"""Text-space collaboration: the planner's decoded plan goes into the executor's prompt.

Any writer can plan and any can execute, which gives the paper's four pairings DDLM→ARM, ARM→DDLM, ARM→ARM and
DDLM→DDLM with one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from latent_darm.pipelines.base import Accounting, Pipeline, PipelineResult, ProgressCallback, check_questions
from latent_darm.pipelines.prompts import AnswerType, PromptTemplates
from latent_darm.pipelines.writers import Writer


@dataclass
class TextPipeline(Pipeline):
    """planner writes hints from the planner prompt; executor answers from plan + question + answer format."""

    planner: Writer
    executor: Writer
    templates: PromptTemplates = field(default_factory=PromptTemplates)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"text-{self.planner.kind}-{self.executor.kind}"

    def run(
        self,
        questions: Sequence[str],
        answer_type: AnswerType,
        *,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[PipelineResult]:
        check_questions(questions)
        plans = self.planner.write([self.templates.planner_prompt(q) for q in questions], batch_size)
        prompts = [
            self.templates.text_executor_prompt(q, p.text, answer_type) for q, p in zip(questions, plans, strict=True)
        ]
        answers = self.executor.write(prompts, batch_size)
        if on_progress is not None:
            on_progress(len(questions))
        return [
            PipelineResult(
                question=q,
                output=a.text,
                plan=p.text,
                accounting=Accounting(
                    planner_tokens=p.tokens,
                    executor_tokens=a.tokens,
                    planner_forward_passes=p.forward_passes,
                    executor_forward_passes=a.forward_passes,
                    seconds=p.seconds + a.seconds,
                ),
                extras={"plan_truncated": p.truncated},
                truncated=a.truncated,
            )
            for q, p, a in zip(questions, plans, answers, strict=True)
        ]

    def rendered_prompts(self, question: str, answer_type: AnswerType) -> dict[str, str]:
        return {
            "planner": self.planner.render(self.templates.planner_prompt(question)),
            "executor": self.executor.render(self.templates.text_executor_prompt(question, "{plan}", answer_type)),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "planner": self.planner.describe(),
            "executor": self.executor.describe(),
            "templates": self.templates.to_dict(),
        }
