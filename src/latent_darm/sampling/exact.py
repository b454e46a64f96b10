"""The LLaDA reverse process exactly as ML-GSAI/LLaDA ``generate.py`` runs it, batched.

Semi-autoregressive blocks; in each block a fixed number of steps, each revealing the scheduled number of the
most confident masked positions. The only departures are ones that cannot change the result: logits are
computed only where a token can be revealed (the current block, plus any earlier position still masked because
the model proposed the mask token there) and the softmax runs in float32.
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
from latent_darm.sampling.schedule import num_transfer_tokens, top_k_per_row


@torch.no_grad()
def generate_exact(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Fill ``config.gen_length`` masks after the left-padded prompts ``input_ids`` [B, P]."""
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    steps_left = config.step_budget
    for block_index in range(config.num_blocks):
        start = prompt_length + block_index * config.block_length
        block = (start, start + config.block_length)
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        for step in range(config.steps_per_block):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            logits = denoise(canvas, window)
            tokens = canvas[:, window[0] : window[1]]
            x0, confidence = propose(logits, tokens, window, canvas.shape[1], config, ids, generator)
            chosen = top_k_per_row(confidence, counts[:, step])
            canvas[:, window[0] : window[1]] = torch.where(chosen, x0, tokens)
            steps_left -= 1
    return denoise.output(canvas)
