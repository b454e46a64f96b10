"""The Python entry point in the transformers style: ``LatentDARM.from_pretrained(...)(questions)``.

It builds the same latent pipeline ``darm eval --pipeline latent`` and ``darm solve`` build, through the same
pipeline builder (:func:`~latent_darm.pipelines.builder.pipeline_spec`), so the API, the CLI and the evaluation
harness cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import overload

from latent_darm.errors import ConfigError
from latent_darm.models.family import local_family
from latent_darm.pipelines.base import PipelineResult
from latent_darm.pipelines.builder import pipeline_spec
from latent_darm.pipelines.factory import build_pipeline
from latent_darm.pipelines.latent import LatentPipeline
from latent_darm.pipelines.prompts import AnswerType


class LatentDARM:
    """A diffusion planner, a projector and an autoregressive executor answering in latent space."""

    def __init__(self, pipeline: LatentPipeline) -> None:
        self.pipeline = pipeline

    @classmethod
    def from_pretrained(
        cls,
        planner: str | Path,
        executor: str | Path,
        projector: str | Path,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        gen_length: int | None = None,
        steps: int | None = None,
        block_length: int | None = None,
        threshold: float | None = None,
        cache: str | None = None,
        denoise_fraction: float | None = None,
        max_new_tokens: int = 64,
        repetition_penalty: float = 1.0,
        latent_noise: float = 0.0,
        prompts: str | Path | None = None,
        force: bool = False,
    ) -> LatentDARM:
        """Load the three parts. Planner sampler settings left as None are those the projector was trained with
        (a different value is used, warned about and recorded in ``describe()``). ``dtype`` ``auto`` is float32 on
        CPU and bfloat16 on a GPU, as in every command. ``force`` accepts a projector trained for other tokenizers
        (never other hidden sizes)."""
        for name, value in (("gen_length", gen_length), ("steps", steps), ("max_new_tokens", max_new_tokens)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        family = local_family(planner)
        if family is not None and not family.uses_blocks and block_length is not None:
            raise ConfigError(f"block_length is not used by {family.name} (it denoises the whole canvas at once)")
        spec = pipeline_spec(
            pipeline="latent",
            planner=str(planner),
            executor=str(executor),
            projector=str(projector),
            gen_length=gen_length,
            steps=steps,
            block_length=block_length,
            threshold=threshold,
            cache=cache,
            denoise_fraction=denoise_fraction,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            latent_noise=latent_noise,
            prompts=None if prompts is None else str(prompts),
            dtype=dtype,
            device=device,
            force_projector=force,
        )
        pipeline = build_pipeline(replace(spec, device=device))
        assert isinstance(pipeline, LatentPipeline)
        return cls(pipeline)

    @overload
    def __call__(self, questions: str, answer_type: AnswerType = "math", *, batch_size: int = 8) -> PipelineResult: ...

    @overload
    def __call__(
        self, questions: Sequence[str], answer_type: AnswerType = "math", *, batch_size: int = 8
    ) -> list[PipelineResult]: ...

    def __call__(
        self, questions: str | Sequence[str], answer_type: AnswerType = "math", *, batch_size: int = 8
    ) -> PipelineResult | list[PipelineResult]:
        """Answer one question (returns one result) or a list (returns a list, in order)."""
        if isinstance(questions, str):
            return self.pipeline.run([questions], answer_type, batch_size=batch_size)[0]
        return self.pipeline.run(list(questions), answer_type, batch_size=batch_size)
