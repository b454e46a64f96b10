"""Fast-dLLM's approximate block KV cache, prefix and dual, with the schedule of exact mode or the threshold τ.

At the first step of a block one pass runs the whole visible canvas and keeps every position's keys/values.
Later steps of the block recompute a span and read every other position from the cache (the span's own keys and
values are written back into it in place):
* ``prefix``: the span is the block and everything after it; the prefix before the block comes from the cache;
* ``dual``: the span is the block alone; prefix *and* masked suffix come from the cache.
The span starts where the block's candidate window started (earlier positions still masked included).

Latents: a position's hidden state from the last pass that computed it. Positions before the last block were
last computed by that block's first pass, an uncached pass over the final canvas with the last block still masked;
positions the spans recompute carry the span pass's (approximate, cached) hidden states, except that the output of
the first layer (``hidden_layer=1``) is exact in every pass, because the first layer's keys and values depend on
the tokens alone and the cached ones were computed from the same tokens.
"""

from __future__ import annotations

import torch

from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.sampling.config import SamplerConfig
from latent_darm.sampling.denoiser import (
    Denoiser,
    SampleOutput,
    SpecialIds,
    blocks,
    candidate_window,
    fill_after_eos_blocks,
    local_draws,
    pick,
    reveal,
    rows_to_decode,
    start_canvas,
    visible_end,
)
from latent_darm.sampling.schedule import above_threshold, num_transfer_tokens, top_k_per_row


@torch.no_grad()
def generate_prefix_cache(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Block KV cache for the prompt and the finished blocks; the block and the masked suffix are recomputed."""
    return _generate_cached(model, input_ids, attention_mask, config, ids, generator, dual=False)


@torch.no_grad()
def generate_dual_cache(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Block KV cache for both sides of the block; only the block is recomputed."""
    return _generate_cached(model, input_ids, attention_mask, config, ids, generator, dual=True)


def _generate_cached(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None,
    *,
    dual: bool,
) -> SampleOutput:
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        visible = visible_end(config, block, canvas.shape[1])
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        span_start = block[0]
        step = 0
        while step < config.block_length and bool((canvas[:, block[0] : block[1]] == ids.mask).any()):
            if steps_left == 0:
                return denoise.output(canvas)
            if config.threshold is None and step == config.steps_per_block:
                break
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            rows = rows_to_decode(canvas, window, ids.mask)
            if step == 0:
                span_start = window[0]
                predictions = denoise(canvas, window, rows, visible_end=visible, fill_cache=True)
            else:
                span = (span_start, block[1] if dual else visible)
                predictions = denoise(canvas, window, rows, visible_end=visible, span=span)
            uniform, remask_draw = local_draws(predictions.logits, canvas.shape[0], visible, config, generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            if config.threshold is not None:
                chosen = above_threshold(confidence, config.threshold)
            else:
                chosen = top_k_per_row(confidence, counts[:, step], offset=window[0], length=visible)
            reveal(canvas, window, tokens, chosen)
            step += 1
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
    return denoise.output(canvas)
