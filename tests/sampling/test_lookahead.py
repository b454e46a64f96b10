"""``lookahead``, He et al.'s knob, on the LLaDA sampler: each pass holds the prompt, the decoded tokens, the
positions being decoded and n further masked positions at their true position ids (the nearest: the canvas ends
there; or drawn at random each step); n = all is exact mode."""

from __future__ import annotations

import random

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.models.llada import fast_sampler, sampler
from latent_darm.models.llada.sampler import generate_exact, llada_generate
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.sampling import SpecialIds
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
def test_lookahead_of_every_position_is_the_reference_token_for_token(llada_model, tokenizer, ids, choice, seed):
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
        config = LLaDASamplerConfig(**settings, lookahead=16, lookahead_choice=choice)
        got = generate_exact(llada_model, prompt, mask, config, ids)
    assert torch.equal(got.sequences, expected)


@pytest.mark.parametrize("n", [0, 3, 8])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_held_columns_at_true_positions_compute_what_a_cut_canvas_computes(
    llada_model, tokenizer, ids, n, threshold, monkeypatch
):
    """Drawn positions run as gathered columns at their true position ids; handed the nearest columns, that pass
    must compute what ending the canvas after them computes (nearest lookahead): tokens, passes and latents."""
    prompt, mask = _padded(700 + n, tokenizer.pad_token_id, 3)
    base = dict(gen_length=24, block_length=8, steps=24, threshold=threshold, hidden_layer=-1, lookahead=n)
    cut = llada_generate(llada_model, prompt, mask, LLaDASamplerConfig(**base), ids)

    def nearest_columns(config, block, length, device, generator):
        return torch.arange(min(length, block[1] + n), device=device)

    for module in (sampler, fast_sampler):
        monkeypatch.setattr(module, "held_columns", nearest_columns)
    held = llada_generate(llada_model, prompt, mask, LLaDASamplerConfig(**base, lookahead_choice="random"), ids)
    assert torch.equal(held.sequences, cut.sequences) and held.nfe == cut.nfe
    assert torch.allclose(held.hidden, cut.hidden, atol=1e-5)


def test_each_pass_holds_the_block_prefix_and_n_masked_positions_at_true_positions(llada_model, tokenizer, ids):
    prompt, mask = _padded(800, tokenizer.pad_token_id, 2)
    seen: list[torch.Tensor] = []
    forward = llada_model.forward

    def spy(input_ids, attention_mask=None, **kwargs):
        seen.append(kwargs["position_ids"].clone())
        return forward(input_ids, attention_mask, **kwargs)

    config = LLaDASamplerConfig(gen_length=32, block_length=8, steps=16, lookahead=5, lookahead_choice="random")
    llada_model.forward = spy
    try:
        out = llada_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(0))
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
    again = llada_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(0))
    assert torch.equal(again.sequences, out.sequences)


@pytest.mark.parametrize("choice", ["nearest", "random"])
def test_batched_with_padding_equals_each_row_alone(llada_model, tokenizer, ids, choice):
    """The held columns are shared by the batch (one draw per step), so a padded batch decodes each row as alone."""
    prompt, mask = _padded(900, tokenizer.pad_token_id, 3)
    config = LLaDASamplerConfig(gen_length=24, block_length=8, steps=24, lookahead=2, lookahead_choice=choice)
    batched = llada_generate(llada_model, prompt, mask, config, ids, torch.Generator().manual_seed(4))
    for row in range(3):
        alone = llada_generate(
            llada_model, prompt[row : row + 1], mask[row : row + 1], config, ids, torch.Generator().manual_seed(4)
        )
        assert torch.equal(batched.sequences[row : row + 1], alone.sequences)


def test_a_shorter_lookahead_changes_the_plan(llada_model, tokenizer, ids):
    prompt, mask = _padded(901, tokenizer.pad_token_id, 3)
    base = dict(gen_length=32, block_length=8, steps=32)
    full = generate_exact(llada_model, prompt, mask, LLaDASamplerConfig(**base), ids)
    none = generate_exact(llada_model, prompt, mask, LLaDASamplerConfig(**base, lookahead=0), ids)
    assert not torch.equal(full.sequences, none.sequences)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(lookahead=-1), "lookahead must be ≥ 0, got -1"),
        (dict(lookahead=4, lookahead_choice="random", cache="dual"), "lookahead_choice 'random' needs cache 'none'"),
        (dict(lookahead=2.5), "lookahead must be an integer or 'all'"),
        (dict(lookahead_choice="far"), "lookahead_choice must be 'nearest' or 'random'"),
    ],
)
def test_bad_lookahead_settings_name_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        LLaDASamplerConfig(gen_length=64, block_length=32, steps=64, **settings)


def test_the_nearest_positions_work_with_a_cache_and_beyond_the_canvas_mean_all():
    """As the canvas cut always did: a KV cache keeps the cut canvas, and more positions than follow are all."""
    assert LLaDASamplerConfig(gen_length=64, block_length=32, steps=64, lookahead=4, cache="dual").lookahead == 4
    assert LLaDASamplerConfig(gen_length=64, block_length=32, steps=64, lookahead=100).lookahead == 100
