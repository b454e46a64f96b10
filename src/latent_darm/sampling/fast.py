"""Fast, approximate variants of the reverse process, in the manner of Fast-dLLM — batched.

* ``threshold``: reveal every masked position of the block whose confidence is ≥ τ (at least one per step); a
  block ends as soon as it has no masks, so easy blocks take few steps.
* ``cache="prefix"``: at the first step of a block run the whole canvas and keep every position's keys/values;
  later steps recompute the block and everything after it, reading the prefix from the cache.
* ``cache="dual"``: later steps recompute only the block; prefix *and* masked suffix come from the cache.
* ``early_stop``: a row whose finished block is all EOS gets EOS everywhere after it.
* ``lookahead``: keep only this many masked positions after the block in the forward pass (the "latent tokens"
  knob of He et al.); ``None`` keeps the whole canvas.
Rows of a batch finish blocks at different steps; a finished row is simply not revealed further.
"""

from __future__ import annotations

import torch

from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.sampling.config import SamplerConfig
from latent_darm.sampling.denoiser import (
    Denoiser,
    SampleOutput,
    SpecialIds,
    candidate_window,
    propose,
    start_canvas,
)
from latent_darm.sampling.schedule import above_threshold, num_transfer_tokens, top_k_per_row


@torch.no_grad()
def generate_fast(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Same contract as :func:`generate_exact`, with the approximations chosen in ``config``."""
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    total = canvas.shape[1]
    steps_left = config.step_budget
    for block_index in range(config.num_blocks):
        start = prompt_length + block_index * config.block_length
        block = (start, start + config.block_length)
        visible = total if config.lookahead is None else min(total, block[1] + config.lookahead)
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        step = 0
        while step < config.block_length and bool((canvas[:, block[0] : block[1]] == ids.mask).any()):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            if config.cache == "none":
                logits = denoise(canvas, window, visible_end=visible)
            elif step == 0:
                logits = denoise(canvas, window, visible_end=visible, fill_cache=True)
            else:
                span = (window[0], visible if config.cache == "prefix" else window[1])
                logits = denoise(canvas, window, visible_end=visible, span=span)
            tokens = canvas[:, window[0] : window[1]]
            x0, confidence = propose(logits, tokens, window, visible, config, ids, generator)
            if config.threshold is not None:
                chosen = above_threshold(confidence, config.threshold)
            elif step < config.steps_per_block:
                chosen = top_k_per_row(confidence, counts[:, step])
            else:
                break
            canvas[:, window[0] : window[1]] = torch.where(chosen, x0, tokens)
            step += 1
            steps_left -= 1
        if config.early_stop:
            finished = (canvas[:, block[0] : block[1]] == ids.eos).all(dim=1)
            canvas[finished, block[1] :] = ids.eos
    return denoise.output(canvas)
