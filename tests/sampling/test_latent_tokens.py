"""The latent-token knob (He et al.) on the LLaDA sampler: each pass holds the prompt, the decoded tokens, the
positions being decoded and n further masked positions at their true position ids; n = all is exact mode."""

from __future__ import annotations

import random

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.sampling import SamplerConfig, SpecialIds, diffusion_generate, generate_exact
from tests.reference_llada import reference_generate
from tests.sampling.prompts import left_padded


@pytest.fixture(scope="module")
def ids(tokenizer) -> SpecialIds:
    return SpecialIds(
        mask=tokenizer.mask_token_id, eos=tokenizer.eos_token_id, eot=tokenizer.convert_tokens_to_ids("<|eot_id|>")
    )


def _padded(seed: int, pad_id: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 10) for _ in range(batch)]
    return left_padded([[rng.randint(20, 299) for _ in range(length)] for length in lengths], pad_id)


@pytest.mark.parametrize("choice", ["nearest", "random"])
@pytest.mark.parametrize("seed", range(3))
def test_all_latent_tokens_is_the_reference_token_for_token(llada_model, tokenizer, ids, choice, seed):
    """n = gen_length - block_length holds every masked position in every pass: the reference's computation, at
    explicit position ids (and no draw, so seeded sampling matches too)."""
    prompt, mask = _padded(600 + seed, tokenizer.pad_token_id, 3)
    settings = dict(gen_length=24, block_length=8, steps=12, temperature=[0.0, 0.7, 1.0][seed])
    settings["cfg_scale"] = 0.5 * (seed == 2)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        expected = reference_generate(
            llada_model, prompt, mask, mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, **settings
        )
        torch.manual_seed(seed)
        config = SamplerConfig(**settings, latent_tokens=16, latent_choice=choice)
        got = generate_exact(llada_model, prompt, mask, config, ids)
    assert torch.equal(got.sequences, expected)


@pytest.mark.parametrize("n", [0, 3, 8])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_nearest_latent_tokens_equal_a_canvas_cut_after_them(llada_model, tokenizer, ids, n, threshold):
    """Gathering columns with position ids must compute what truncating the canvas computes (``lookahead``)."""
    prompt, mask = _padded(700 + n, tokenizer.pad_token_id, 3)
    base = dict(gen_length=24, block_length=8, steps=24, threshold=threshold, hidden_layer=-1)
    held = diffusion_generate(llada_model, prompt, mask, SamplerConfig(**base, latent_tokens=n), ids)
    cut = diffusion_generate(llada_model, prompt, mask, SamplerConfig(**base, lookahead=n), ids)
    assert torch.equal(held.sequences, cut.sequences) and held.nfe == cut.nfe
    assert torch.allclose(held.hidden, cut.hidden, atol=1e-5)


def test_each_pass_holds_the_block_prefix_and_n_masked_positions_at_true_positions(llada_model, tokenizer, ids):
    prompt, mask = _padded(800, tokenizer.pad_token_id, 2)
    seen: list[torch.Tensor] = []
    forward = llada_model.forward

    def spy(input_ids, attention_mask=None, **kwargs):
        seen.append(kwargs["position_ids"].clone())
        return forward(input_ids, attention_mask, **kwargs)

    config = SamplerConfig(gen_length=32, block_length=8, steps=16, latent_tokens=5, latent_choice="random")
    llada_model.forward = spy
    try:
        out = diffusion_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(0))
    finally:
        del llada_model.forward
    width = prompt.shape[1]
    assert len(seen) == out.nfe == 16
    drawn = set()
    for step, columns in enumerate(seen):
        block_end = width + 8 * (step // 4 + 1)
        after = columns[block_end:]
        assert torch.equal(columns[:block_end], torch.arange(block_end))
        assert len(after) == min(5, width + 32 - block_end) and bool((after >= block_end).all())
        assert bool((after[1:] > after[:-1]).all())  # sorted, distinct, true positions of the canvas
        drawn.add(tuple(after.tolist()))
    assert len(drawn) > 4  # drawn afresh each step
    again = diffusion_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(0))
    assert torch.equal(again.sequences, out.sequences)


@pytest.mark.parametrize("choice", ["nearest", "random"])
def test_batched_with_padding_equals_each_row_alone(llada_model, tokenizer, ids, choice):
    """The held columns are shared by the batch (one draw per step), so a padded batch decodes each row as alone."""
    prompt, mask = _padded(900, tokenizer.pad_token_id, 3)
    config = SamplerConfig(gen_length=24, block_length=8, steps=24, latent_tokens=2, latent_choice=choice)
    batched = diffusion_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(4))
    for row in range(3):
        alone = diffusion_generate(
            llada_model, prompt[row : row + 1], mask[row : row + 1], config, ids, torch.Generator().manual_seed(4)
        )
        assert torch.equal(batched.sequences[row : row + 1], alone.sequences)


def test_fewer_latent_tokens_change_the_plan(llada_model, tokenizer, ids):
    prompt, mask = _padded(901, tokenizer.pad_token_id, 3)
    base = dict(gen_length=32, block_length=8, steps=32)
    full = generate_exact(llada_model, prompt, mask, SamplerConfig(**base), ids)
    none = generate_exact(llada_model, prompt, mask, SamplerConfig(**base, latent_tokens=0), ids)
    assert not torch.equal(full.sequences, none.sequences)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(latent_tokens=-1), "latent_tokens must be ≥ 0, got -1"),
        (dict(latent_tokens=33), "latent_tokens 33 exceeds the 32 masked positions"),
        (dict(latent_tokens=4, cache="dual"), "latent_tokens needs cache 'none'"),
        (dict(latent_tokens=2.5), "latent_tokens must be an integer or 'all'"),
        (dict(latent_choice="far"), "latent_choice must be 'nearest' or 'random'"),
    ],
)
def test_bad_latent_token_settings_name_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        SamplerConfig(gen_length=64, block_length=32, steps=64, **settings)
