"""One interface and one result type for every way of answering a question.

A pipeline turns questions into :class:`PipelineResult` objects that carry the executor's output, the plan (text,
or for latent exchange the planner's decoded tokens, for inspection only) and the paper's token accounting:
planner tokens (plan length) and executor tokens (generated), reported separately and summed, plus forward passes
of each model and wall time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from latent_darm.errors import ConfigError
from latent_darm.pipelines.prompts import AnswerType


@dataclass
class Accounting:
    """Cost of one answer. Seconds of a batched stage are shared equally among the batch's questions."""

    planner_tokens: int = 0
    executor_tokens: int = 0
    planner_forward_passes: int = 0
    executor_forward_passes: int = 0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.planner_tokens + self.executor_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass
class PipelineResult:
    """What a pipeline produced for one question. ``truncated``: the answer's budget ran out before an end token,
    so the output may be cut mid-answer (grading then reads no unanchored number from it)."""

    question: str
    output: str
    plan: str | None
    accounting: Accounting
    latent_summary: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "output": self.output,
            "truncated": self.truncated,
            "plan": self.plan,
            "latent_summary": self.latent_summary,
            **self.accounting.to_dict(),
            **self.extras,
        }


ProgressCallback = Callable[[int], None]


class Pipeline(ABC):
    """Answers questions in batches. ``describe()`` lists every setting that can change an answer, so a results
    directory can refuse to mix outputs of two different configurations."""

    name: str

    @abstractmethod
    def run(
        self,
        questions: Sequence[str],
        answer_type: AnswerType,
        *,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[PipelineResult]:
        """Results in input order; ``on_progress(n)`` is called as questions finish."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able settings: pipeline kind, model ids, sampler and decoding settings, prompt templates."""

    def rendered_prompts(self, question: str, answer_type: AnswerType) -> dict[str, str]:
        """The exact text each model reads for ``question`` (chat template and system turn applied), by stage; a
        plan not yet written appears as ``{plan}``. Results directories store it and its hash."""
        return {}


def check_questions(questions: Sequence[str]) -> None:
    """Empty questions are a user error, reported with their position."""
    for index, question in enumerate(questions):
        if not isinstance(question, str) or not question.strip():
            raise ConfigError(f"question {index} is empty")
