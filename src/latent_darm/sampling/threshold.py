"""Fast-dLLM's parallel decoding without a cache: reveal every masked position of the block whose confidence is
≥ τ (at least one per step), so a block ends as soon as it has no masks and easy blocks take few passes.

Rows of a batch finish blocks at different steps; a row whose block is done sits out the passes until the
others catch up (it is not computed). Latents: as in exact mode, from the row's last pass, an uncached pass over
its canvas as it was before its last step. Noise is drawn only where it is used (see ``local_draws``).
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
    local_draws,
    pick,
    reveal,
    rows_to_decode,
    start_canvas,
    visible_end,
)
from latent_darm.sampling.schedule import above_threshold


@torch.no_grad()
def generate_threshold(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: SamplerConfig,
    ids: SpecialIds,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Same contract as :func:`~latent_darm.sampling.exact.generate_exact`, revealing by ``config.threshold``."""
    assert config.threshold is not None
    prompt_length = input_ids.shape[1]
    canvas, mask = start_canvas(input_ids, attention_mask, config.gen_length, ids, model.config.max_sequence_length)
    denoise = Denoiser(model, canvas, mask, prompt_length, config, ids)
    steps_left = config.step_budget
    for block in blocks(config, prompt_length):
        visible = visible_end(config, block, canvas.shape[1])
        step = 0
        while step < config.block_length and bool((canvas[:, block[0] : block[1]] == ids.mask).any()):
            if steps_left == 0:
                return denoise.output(canvas)
            window = candidate_window(canvas, block, prompt_length, ids.mask)
            columns = held_columns(config, block, visible, canvas.device, generator)
            rows = rows_to_decode(canvas, window, ids.mask)
            predictions = denoise(canvas, window, rows, visible_end=visible, columns=columns)
            uniform, remask_draw = local_draws(predictions.logits, canvas.shape[0], visible, config, generator)
            tokens, confidence = pick(predictions, canvas, window, config, ids, uniform, remask_draw)
            reveal(canvas, window, tokens, above_threshold(confidence, config.threshold))
            step += 1
            steps_left -= 1
        if config.early_stop:
            fill_after_eos_blocks(canvas, block, ids)
    return denoise.output(canvas)
