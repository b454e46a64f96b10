"""Masked-diffusion sampling: the exact LLaDA reverse process and Fast-dLLM's approximations, one function each.

* :func:`generate_exact` — ML-GSAI/LLaDA ``generate()`` token for token (``exact.py``);
* :func:`generate_threshold` — reveal by confidence threshold τ (``threshold.py``);
* :func:`generate_prefix_cache`, :func:`generate_dual_cache` — block KV cache (``cache.py``);
all built from the same pieces (``schedule.py``: schedule, Gumbel-max, confidence, top-k/threshold choice;
``denoiser.py``: the forward pass, pick-and-reveal). :func:`diffusion_generate` picks one from the config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.sampling.cache import generate_dual_cache, generate_prefix_cache
from latent_darm.sampling.config import SamplerConfig
from latent_darm.sampling.denoiser import SampleOutput, SpecialIds
from latent_darm.sampling.exact import generate_exact
from latent_darm.sampling.threshold import generate_threshold

__all__ = [
    "SampleOutput",
    "SamplerConfig",
    "SpecialIds",
    "diffusion_generate",
    "generate_dual_cache",
    "generate_exact",
    "generate_fast",
    "generate_prefix_cache",
    "generate_threshold",
    "strategy_for",
]

Strategy = Callable[..., SampleOutput]


def strategy_for(config: SamplerConfig) -> Strategy:
    """The sampling function ``config`` asks for: the cache mode first, then τ, else exact mode."""
    if config.cache == "prefix":
        return generate_prefix_cache
    if config.cache == "dual":
        return generate_dual_cache
    if config.threshold is not None:
        return generate_threshold
    return generate_exact


def diffusion_generate(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` masks after the left-padded prompts ``input_ids`` [B, P] (strategy from config)."""
    return strategy_for(config)(model, input_ids, attention_mask, config, ids, generator)


# The earlier name of the dispatcher for the approximate modes; it now runs whichever strategy the config asks for.
generate_fast = diffusion_generate
