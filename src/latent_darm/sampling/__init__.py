"""Masked-diffusion sampling: the exact LLaDA reverse process and its fast approximations."""

from __future__ import annotations

import torch

from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.sampling.config import SamplerConfig
from latent_darm.sampling.denoiser import SampleOutput, SpecialIds
from latent_darm.sampling.exact import generate_exact
from latent_darm.sampling.fast import generate_fast

__all__ = ["SampleOutput", "SamplerConfig", "SpecialIds", "diffusion_generate", "generate_exact", "generate_fast"]


def diffusion_generate(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Run the exact sampler, or the fast one when ``config`` asks for any approximation."""
    sampler = generate_exact if config.is_exact else generate_fast
    return sampler(model, input_ids, attention_mask, config, ids, generator)
