"""Fast modes: the same algorithm when no approximation is on, fewer passes when one is, same contract."""

from __future__ import annotations

import random

import pytest
import torch

from latent_darm.models.llada.sampler import generate_exact, llada_generate
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.models.tiny import random_llada, tiny_llada_config
from latent_darm.sampling import SpecialIds
from tests.sampling.prompts import left_padded


@pytest.fixture(scope="module")
def ids(tokenizer) -> SpecialIds:
    return SpecialIds(
        mask=tokenizer.mask_token_id, eos=tokenizer.eos_token_id, eot=tokenizer.convert_tokens_to_ids("<|eot_id|>")
    )


def _padded_prompts(seed: int, pad_id: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    lengths = [rng.randint(2, 10) for _ in range(batch)]
    seeded = [torch.Generator().manual_seed(row) for row in range(batch)]
    rows = [torch.randint(20, 300, (n,), generator=g).tolist() for n, g in zip(lengths, seeded, strict=True)]
    return left_padded(rows, pad_id)


@pytest.mark.parametrize("seed", range(4))
def test_fast_loop_without_approximations_is_the_exact_sampler(llada_model, tokenizer, ids, seed):
    prompt, mask = _padded_prompts(seed, tokenizer.pad_token_id)
    config = LLaDASamplerConfig(gen_length=16, block_length=8, steps=8 if seed % 2 else 16, cfg_scale=0.5 * (seed == 3))
    exact = generate_exact(llada_model, prompt, mask, config, ids)
    for same in (config, LLaDASamplerConfig(**{**config.to_dict(), "lookahead": 100})):
        fast = llada_generate(llada_model, prompt, mask, same, ids)
        assert torch.equal(fast.sequences, exact.sequences) and fast.nfe == exact.nfe


def test_threshold_one_reveals_one_token_per_step_like_exact_mode(llada_model, tokenizer, ids):
    """τ = 1 keeps only the most confident position each step: exact mode with one token per step."""
    prompt, mask = _padded_prompts(7, tokenizer.pad_token_id)
    exact = generate_exact(llada_model, prompt, mask, LLaDASamplerConfig(gen_length=16, block_length=8, steps=16), ids)
    fast = llada_generate(
        llada_model, prompt, mask, LLaDASamplerConfig(gen_length=16, block_length=8, steps=16, threshold=1.0), ids
    )
    assert torch.equal(fast.sequences, exact.sequences) and fast.nfe == 16


def test_low_threshold_finishes_blocks_in_fewer_passes_per_row(llada_model, tokenizer, ids):
    prompt, mask = _padded_prompts(8, tokenizer.pad_token_id)
    config = LLaDASamplerConfig(gen_length=32, block_length=8, steps=32, threshold=0.05)
    out = llada_generate(llada_model, prompt, mask, config, ids)
    assert 4 <= out.nfe < 32
    assert (out.row_nfe <= out.nfe).all() and (out.row_nfe >= 4).all()
    assert not bool((out.generated == ids.mask).any())


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_with_one_step_per_block_is_exact(llada_model, tokenizer, ids, cache):
    """Each block's first pass is a full pass, so with one step per block the cache is never read stale."""
    prompt, mask = _padded_prompts(9, tokenizer.pad_token_id)
    config = LLaDASamplerConfig(gen_length=24, block_length=4, steps=6)
    exact = generate_exact(llada_model, prompt, mask, config, ids)
    fast = llada_generate(llada_model, prompt, mask, LLaDASamplerConfig(**{**config.to_dict(), "cache": cache}), ids)
    assert torch.equal(fast.sequences, exact.sequences)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_modes_finish_every_row_and_keep_latents_for_every_position(llada_model, tokenizer, ids, cache):
    prompt, mask = _padded_prompts(10, tokenizer.pad_token_id)
    config = LLaDASamplerConfig(gen_length=16, block_length=8, steps=16, cache=cache, threshold=0.3, hidden_layer=-1)
    out = llada_generate(llada_model, prompt, mask, config, ids)
    exact = generate_exact(llada_model, prompt, mask, LLaDASamplerConfig(gen_length=16, block_length=8, steps=16), ids)
    assert out.nfe <= exact.nfe
    assert not (out.generated == ids.mask).any() and torch.equal(out.sequences[:, :-16], prompt)
    assert out.hidden is not None and out.hidden.shape == (3, 16, llada_model.config.d_model)
    # The first pass is a full pass over the same canvas as exact mode's, and τ always reveals the most confident
    # position, which is the one exact mode (one token per step) reveals first: those tokens must agree.
    first = generate_exact(
        llada_model,
        prompt,
        mask,
        LLaDASamplerConfig(gen_length=16, block_length=8, steps=16, denoise_fraction=1 / 16),
        ids,
    )
    revealed = first.generated != ids.mask
    assert int(revealed.sum()) == 3 and torch.equal(out.generated[revealed], first.generated[revealed])
    # Blocks before the last are latents of the last block's first (uncached) pass: final canvas, last block masked.
    seen = out.sequences.clone()
    seen[:, -8:] = ids.mask
    full = llada_model(seen, torch.cat((mask, torch.ones(3, 16, dtype=mask.dtype)), 1), hidden_layer=-1).hidden
    assert torch.allclose(out.hidden[:, :8], full[:, -16:-8], atol=1e-5)


def test_threshold_rows_are_decoded_and_counted_as_if_alone(llada_model, tokenizer, ids):
    """Rows that finished their block sit out the batch's passes, and each row's NFE counts its own passes only."""
    prompt, mask = _padded_prompts(12, tokenizer.pad_token_id, batch=4)
    for cache in ("none", "dual"):
        config = LLaDASamplerConfig(gen_length=24, block_length=8, steps=24, threshold=0.2, cache=cache)
        batched = llada_generate(llada_model, prompt, mask, config, ids)
        alone = [llada_generate(llada_model, prompt[r : r + 1], mask[r : r + 1], config, ids) for r in range(4)]
        assert torch.equal(batched.sequences, torch.cat([a.sequences for a in alone]))
        assert batched.row_nfe.tolist() == [a.nfe for a in alone]
        assert len(set(batched.row_nfe.tolist())) > 1 and batched.nfe >= max(batched.row_nfe.tolist())


def test_early_stop_fills_eos_after_an_all_eos_block(tokenizer, ids):
    model = random_llada(tiny_llada_config(tokenizer), seed=11)
    with torch.no_grad():
        model.model.transformer.ln_f.weight.zero_()  # all logits 0: argmax is token 0, here playing EOS
    ids = SpecialIds(mask=ids.mask, eos=0)
    prompt = torch.randint(20, 300, (2, 5))
    config = LLaDASamplerConfig(gen_length=32, block_length=8, steps=32)
    exact = generate_exact(model, prompt, None, config, ids)
    assert (exact.generated == ids.eos).all()
    stopped = llada_generate(model, prompt, None, LLaDASamplerConfig(**{**config.to_dict(), "early_stop": True}), ids)
    assert torch.equal(stopped.sequences, exact.sequences)
    assert stopped.nfe == 8 and exact.nfe == 32


def test_lookahead_zero_hides_the_masked_suffix(llada_model, ids):
    """With no look-ahead the pass for block 1 equals an exact run on a canvas that ends at block 1."""
    prompt = torch.randint(20, 300, (2, 6))
    short = generate_exact(llada_model, prompt, None, LLaDASamplerConfig(gen_length=8, block_length=8, steps=8), ids)
    long = llada_generate(
        llada_model, prompt, None, LLaDASamplerConfig(gen_length=24, block_length=8, steps=24, lookahead=0), ids
    )
    assert torch.equal(long.generated[:, :8], short.generated)
