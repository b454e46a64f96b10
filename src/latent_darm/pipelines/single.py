"""One model answers alone: the ARM directly or with chain of thought, or the DDLM (the paper's baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from latent_darm.pipelines.base import Accounting, Pipeline, PipelineResult, ProgressCallback, check_questions
from latent_darm.pipelines.prompts import AnswerType, PromptTemplates
from latent_darm.pipelines.writers import Writer


@dataclass
class SingleModelPipeline(Pipeline):
    """``arm`` (direct or chain of thought) or ``ddlm``: question → answer, no plan."""

    writer: Writer
    chain_of_thought: bool = False
    templates: PromptTemplates = field(default_factory=PromptTemplates)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.writer.kind + ("-cot" if self.chain_of_thought else "")

    def run(
        self,
        questions: Sequence[str],
        answer_type: AnswerType,
        *,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[PipelineResult]:
        check_questions(questions)
        prompts = [self.templates.direct_prompt(q, answer_type, self.chain_of_thought) for q in questions]
        answers = self.writer.write(prompts, batch_size)
        if on_progress is not None:
            on_progress(len(questions))
        return [
            PipelineResult(
                question=q,
                output=a.text,
                plan=None,
                accounting=Accounting(
                    executor_tokens=a.tokens, executor_forward_passes=a.forward_passes, seconds=a.seconds
                ),
                truncated=a.truncated,
            )
            for q, a in zip(questions, answers, strict=True)
        ]

    def rendered_prompts(self, question: str, answer_type: AnswerType) -> dict[str, str]:
        return {
            "executor": self.writer.render(self.templates.direct_prompt(question, answer_type, self.chain_of_thought))
        }

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "executor": self.writer.describe(),
            "chain_of_thought": self.chain_of_thought,
            "templates": self.templates.to_dict(),
        }
