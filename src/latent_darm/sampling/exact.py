"""The LLaDA reverse process exactly as ML-GSAI/LLaDA ``generate.py`` runs it, batched.

Semi-autoregressive blocks; in each block a fixed number of steps, each revealing the scheduled number of the
most confident masked positions. The departures cannot change the result: logits are computed only at the
masked positions that can be revealed (the current block, plus any earlier position still masked because the
model proposed the mask token there), and the softmax runs in float32. Random draws (Gumbel noise over the whole
canvas, then the random-remasking draw) are made as the reference makes them, so a seeded run gives its tokens.

Latents: each position's hidden state from the last forward pass, an uncached pass over the canvas as it was
before the last step. Three knobs keep the same loop: ``latent_tokens`` (each pass holds only n of the masked
positions after the block, at their true positions), ``lookahead`` (the canvas ends n positions after the block)
and ``early_stop`` (after an all-EOS block the rest of the row is EOS; once no row has a mask left, no
further pass runs).
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
    held_columns,
    pick,
    reference_uniform,
    reveal,
    start_canvas,
    visible_end,
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
    batch, length = canvas.shape
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        counts = num_transfer_tokens(canvas[:, block[0] : block[1]] == ids.mask, config.steps_per_block)
        for step in range(config.steps_per_block):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            visible = visible_end(config, block, length)
            columns = held_columns(config, block, visible, canvas.device, generator)
            predictions = denoise(canvas, window, visible_end=visible, columns=columns)
            uniform = None
            if config.temperature > 0:
                uniform = reference_uniform(predictions, window, (batch, length), canvas.device, generator)
            remask_draw = None
            if config.remasking == "random":
                remask_draw = torch.rand((batch, length), device=canvas.device, generator=generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            chosen = top_k_per_row(confidence, counts[:, step], offset=window[0], length=length)
            reveal(canvas, window, tokens, chosen)
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
            if not bool((canvas[:, prompt_length:] == ids.mask).any()):
                break
    return denoise.output(canvas)
