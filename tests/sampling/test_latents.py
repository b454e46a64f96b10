"""The plan latents each strategy returns are the hidden states the method says they are (issue 11, item 14).

* exact and τ modes: every position's latent comes from the row's last pass, an uncached pass over the canvas
  as it was before the row's last step;
* prefix and dual cache: positions before the last block come from that block's first pass, an uncached pass
  over the final canvas with the last block still masked; the spans' positions carry the span pass's states,
  which at the first layer (``hidden_layer=1``) are exact — equal to an uncached pass over the canvas the last
  span pass saw — because first-layer keys/values depend on the tokens alone.
A sampler whose span passes did not update the latents of the positions they recompute fails the layer-1 check.
"""

from __future__ import annotations

import random

import pytest
import torch

from latent_darm.models.llada.sampler import llada_generate
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SpecialIds
from tests.sampling.prompts import left_padded

MODES = {
    "exact": {},
    "threshold": {"threshold": 0.3},
    "prefix": {"cache": "prefix"},
    "prefix+threshold": {"cache": "prefix", "threshold": 0.3},
    "dual": {"cache": "dual"},
    "dual+threshold": {"cache": "dual", "threshold": 0.3},
}


@pytest.fixture(scope="module")
def ids(tokenizer) -> SpecialIds:
    return SpecialIds(mask=tokenizer.mask_token_id, eos=tokenizer.eos_token_id)


def _prompts(pad_id: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    lengths = [rng.randint(2, 9) for _ in range(batch)]
    return left_padded([[rng.randint(20, 299) for _ in range(length)] for length in lengths], pad_id)


def _before_last_step(model, prompt, mask, config: LLaDASamplerConfig, ids: SpecialIds, nfe: int) -> torch.Tensor:
    """The canvas the last pass saw: the same run stopped one step earlier (``denoise_fraction``)."""
    earlier = LLaDASamplerConfig(**{**config.to_dict(), "denoise_fraction": (nfe - 1) / config.steps})
    assert earlier.step_budget == nfe - 1
    return llada_generate(model, prompt, mask, earlier, ids).sequences


def _uncached(model, canvas, mask, prompt_length, layer):
    full_mask = torch.cat((mask, torch.ones_like(canvas[:, prompt_length:])), dim=1)
    return model(canvas, full_mask, hidden_layer=layer).hidden[:, prompt_length:]


@pytest.mark.parametrize("layer", [1, -1])
@pytest.mark.parametrize("mode", list(MODES))
def test_latents_are_the_states_of_the_pass_the_method_says(llada_model, tokenizer, ids, mode, layer):
    config = LLaDASamplerConfig(gen_length=24, block_length=8, steps=24, hidden_layer=layer, **MODES[mode])
    prompt, mask = _prompts(tokenizer.pad_token_id, 3, 1)
    batches = [(prompt, mask)]
    if config.threshold is not None:  # rows finish at different steps: each runs alone to find its last canvas
        batches = [(prompt[row : row + 1], mask[row : row + 1]) for row in range(3)]
    last_block = slice(config.gen_length - config.block_length, None)
    for rows_prompt, rows_mask in batches:
        out = llada_generate(llada_model, rows_prompt, rows_mask, config, ids)
        assert out.hidden is not None and not (out.generated == ids.mask).any()
        before_last_step = _before_last_step(llada_model, rows_prompt, rows_mask, config, ids, out.nfe)
        last_pass = _uncached(llada_model, before_last_step, rows_mask, prompt.shape[1], layer)
        if config.cache == "none":
            assert torch.allclose(out.hidden, last_pass, atol=1e-5)
            continue
        block_start = out.sequences.clone()
        block_start[:, prompt.shape[1] + config.gen_length - config.block_length :] = ids.mask
        first_pass = _uncached(llada_model, block_start, rows_mask, prompt.shape[1], layer)
        assert torch.allclose(out.hidden[:, : last_block.start], first_pass[:, : last_block.start], atol=1e-5)
        if layer == 1:  # exact at the first layer, so the spans' states must be the last pass's
            assert torch.allclose(out.hidden[:, last_block], last_pass[:, last_block], atol=1e-5)
        # The spans updated the last block's latents: they are not the block's first pass's any more.
        assert not torch.allclose(out.hidden[:, last_block], first_pass[:, last_block], atol=1e-3)
