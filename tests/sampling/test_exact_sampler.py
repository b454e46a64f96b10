"""Exact mode reproduces ML-GSAI/LLaDA ``generate()`` token for token, on random prompts and settings."""

from __future__ import annotations

import random

import pytest
import torch

from latent_darm.errors import ConfigError
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


def _random_batch(rng: random.Random, vocab: int, ids: SpecialIds, pad_id: int, batch: int):
    """Left-padded prompts of random lengths made of random non-mask ids."""
    lengths = [rng.randint(1, 14) for _ in range(batch)]
    allowed = [t for t in range(vocab) if t not in (ids.mask, pad_id)]
    return left_padded([[rng.choice(allowed) for _ in range(length)] for length in lengths], pad_id)


def _random_settings(rng: random.Random) -> dict:
    block_length = rng.choice([2, 4, 8])
    num_blocks = rng.choice([1, 2, 3])
    gen_length = block_length * num_blocks
    steps = num_blocks * rng.choice([1, 2, block_length])
    return dict(gen_length=gen_length, block_length=block_length, steps=steps)


def _compare(model, ids, prompt, mask, **settings):
    reference_kwargs = {k: v for k, v in settings.items()}
    expected = reference_generate(
        model, prompt, mask, mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, **reference_kwargs
    )
    got = generate_exact(model, prompt, mask, LLaDASamplerConfig(**settings), ids)
    assert torch.equal(got.sequences, expected), settings
    return got


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_padded_batches(llada_model, tokenizer, ids, seed):
    rng = random.Random(seed)
    prompt, mask = _random_batch(rng, llada_model.config.vocab_size, ids, tokenizer.pad_token_id, rng.randint(1, 4))
    _compare(llada_model, ids, prompt, mask, **_random_settings(rng))


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_without_attention_mask(llada_model, tokenizer, ids, seed):
    rng = random.Random(100 + seed)
    prompt, _ = _random_batch(rng, llada_model.config.vocab_size, ids, tokenizer.pad_token_id, 1)
    _compare(llada_model, ids, prompt, None, **_random_settings(rng))


OPTIONS = ["cfg", "logits_eos_inf", "confidence_eos_eot_inf", "all"]


@pytest.mark.parametrize("option", OPTIONS)
def test_matches_reference_with_guidance_and_eos_options(llada_model, tokenizer, ids, option):
    # Seeded by the option's index, not hash(option): string hashes change with PYTHONHASHSEED.
    rng = random.Random(300 + OPTIONS.index(option))
    for _ in range(3):
        prompt, mask = _random_batch(rng, llada_model.config.vocab_size, ids, tokenizer.pad_token_id, 3)
        settings = _random_settings(rng)
        if option in ("cfg", "all"):
            settings["cfg_scale"] = rng.choice([0.5, 1.5])
        if option in ("logits_eos_inf", "all"):
            settings["logits_eos_inf"] = True
        if option in ("confidence_eos_eot_inf", "all"):
            settings["confidence_eos_eot_inf"] = True
        _compare(llada_model, ids, prompt, mask, **settings)


def test_eos_options_change_the_output_of_an_eos_loving_model(tokenizer, ids):
    """Guard against options that are accepted but do nothing: boost EOS and check both options bite."""
    from latent_darm.models.tiny import random_llada, tiny_llada_config

    model = random_llada(tiny_llada_config(tokenizer), seed=5)
    with torch.no_grad():
        model.model.transformer.ff_out.weight[ids.eos] *= 6
    prompt = torch.randint(20, 300, (2, 6))
    base = LLaDASamplerConfig(gen_length=16, block_length=8, steps=16)
    plain = generate_exact(model, prompt, None, base, ids).generated
    no_eos = generate_exact(model, prompt, None, LLaDASamplerConfig(**{**base.to_dict(), "logits_eos_inf": True}), ids)
    assert (plain == ids.eos).any() and not (no_eos.generated == ids.eos).any()
    late_eos = generate_exact(
        model, prompt, None, LLaDASamplerConfig(**{**base.to_dict(), "confidence_eos_eot_inf": True}), ids
    )
    assert not torch.equal(late_eos.generated, plain)


@pytest.mark.parametrize("seed", range(3))
def test_random_remasking_reproduces_the_reference_draws_with_the_same_seed(llada_model, tokenizer, ids, seed):
    rng = random.Random(200 + seed)
    prompt, mask = _random_batch(rng, llada_model.config.vocab_size, ids, tokenizer.pad_token_id, 2)
    settings = dict(**_random_settings(rng), remasking="random")
    torch.manual_seed(seed)
    expected = reference_generate(
        llada_model, prompt, mask, mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, **settings
    )
    torch.manual_seed(seed)
    got = generate_exact(llada_model, prompt, mask, LLaDASamplerConfig(**settings), ids)
    assert torch.equal(got.sequences, expected)


def test_temperature_sampling_is_seeded_and_varies(llada_model, ids):
    prompt = torch.randint(20, 300, (2, 8))
    config = LLaDASamplerConfig(gen_length=16, block_length=8, steps=8, temperature=1.0)
    first = generate_exact(llada_model, prompt, None, config, ids, torch.Generator().manual_seed(1)).generated
    again = generate_exact(llada_model, prompt, None, config, ids, torch.Generator().manual_seed(1)).generated
    other = generate_exact(llada_model, prompt, None, config, ids, torch.Generator().manual_seed(2)).generated
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_nfe_latents_and_partial_denoising(llada_model, ids):
    prompt = torch.randint(20, 300, (3, 7))
    config = LLaDASamplerConfig(gen_length=16, block_length=8, steps=16, hidden_layer=-1)
    out = generate_exact(llada_model, prompt, None, config, ids)
    assert out.nfe == 16 and out.row_nfe.tolist() == [16, 16, 16]
    assert out.hidden.shape == (3, 16, llada_model.config.d_model)
    # The latents come from the last forward pass, which saw the canvas one step before the end.
    penultimate = generate_exact(
        llada_model, prompt, None, LLaDASamplerConfig(**{**config.to_dict(), "denoise_fraction": 15 / 16}), ids
    )
    assert penultimate.nfe == 15
    assert ((penultimate.sequences != out.sequences).sum(dim=1) == 1).all()
    expected = llada_model(penultimate.sequences, hidden_layer=-1).hidden[:, 7:]
    assert torch.allclose(out.hidden, expected, atol=1e-5)
    # After half of the steps the second block is still fully masked.
    half = generate_exact(
        llada_model, prompt, None, LLaDASamplerConfig(**{**config.to_dict(), "denoise_fraction": 0.5}), ids
    )
    assert half.nfe == 8 and (half.generated[:, 8:] == ids.mask).all()
    assert torch.equal(half.generated[:, :8], out.generated[:, :8])


def test_cfg_without_attention_mask_works(llada_model, ids):
    out = llada_generate(
        llada_model,
        torch.randint(20, 300, (2, 5)),
        None,
        LLaDASamplerConfig(gen_length=8, block_length=4, steps=4, cfg_scale=1.0),
        ids,
    )
    assert out.nfe == 8


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(gen_length=10, block_length=4), "gen_length 10 is not divisible by block_length 4"),
        (dict(gen_length=16, block_length=4, steps=6), "steps 6 is not divisible by the number of blocks 4"),
        (dict(remasking="greedy"), "remasking 'greedy' is not known to LLaDA"),
        (dict(threshold=1.5), "threshold must be in"),
        (dict(cache="full"), "cache must be"),
    ],
)
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        LLaDASamplerConfig(**settings)


def test_bad_prompts_are_refused(llada_model, ids):
    config = LLaDASamplerConfig(gen_length=8, block_length=8, steps=8)
    too_long = torch.randint(20, 300, (1, llada_model.config.max_sequence_length))
    with pytest.raises(ConfigError, match="exceeds the model's max_sequence_length"):
        generate_exact(llada_model, too_long, None, config, ids)
    prompt = torch.tensor([[ids.mask, 30, 31]])
    with pytest.raises(ConfigError, match="pad token id equals the mask token id"):
        generate_exact(llada_model, prompt, torch.tensor([[0, 1, 1]]), config, ids)
    with pytest.raises(ConfigError, match="contains the mask token id"):
        generate_exact(llada_model, prompt, None, config, ids)


def _eos_loving_model(tokenizer, ids: SpecialIds, seed: int):
    """A random model whose argmax is EOS or EoT at many positions, so excluded confidences tie at exactly 0."""
    from latent_darm.models.tiny import random_llada, tiny_llada_config

    model = random_llada(tiny_llada_config(tokenizer), seed=seed)
    with torch.no_grad():
        head = model.model.transformer.ff_out.weight
        head[ids.eos] *= 4
        head[ids.eot] *= 4
    return model


@pytest.mark.parametrize("seed", range(6))
def test_ties_at_zero_confidence_break_as_in_the_reference(tokenizer, ids, seed):
    """With EOS/EoT excluded from the confidence, every position whose argmax is EOS/EoT has confidence exactly 0.
    The reference breaks those ties by ``topk`` over the whole canvas; the sampler must pick the same positions."""
    model = _eos_loving_model(tokenizer, ids, seed)
    rng = random.Random(400 + seed)
    prompt, mask = _random_batch(rng, model.config.vocab_size, ids, tokenizer.pad_token_id, 3)
    settings = dict(gen_length=48, block_length=16, steps=6, confidence_eos_eot_inf=True)
    got = _compare(model, ids, prompt, mask, **settings)
    # The case must really contain ties: several positions of one step revealed at confidence 0.
    probe = dict(settings, steps=3)
    tied = reference_generate(model, prompt, mask, mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, **probe)
    assert ((tied[:, prompt.shape[1] :] == ids.eos) | (tied[:, prompt.shape[1] :] == ids.eot)).sum() >= 8
    assert got.sequences.shape == (3, prompt.shape[1] + 48)


@pytest.mark.parametrize(
    ("seed", "options"),
    [
        (0, {}),
        (1, {"confidence_eos_eot_inf": True}),
        (2, {"confidence_eos_eot_inf": True, "logits_eos_inf": True}),
        (3, {"cfg_scale": 1.0}),
        (4, {"remasking": "random"}),
        (5, {"confidence_eos_eot_inf": True, "remasking": "random"}),
    ],
)
def test_temperature_sampling_reproduces_the_reference_with_the_same_seed(tokenizer, ids, seed, options):
    """At temperature > 0 the Gumbel noise is drawn as the reference draws it (over the whole canvas, from the
    global generator), so a seeded run gives the reference's tokens; EOS stays a candidate for the confidence at
    temperature > 0 (only EoT is excluded), as in the reference."""
    model = _eos_loving_model(tokenizer, ids, 10 + seed)
    rng = random.Random(500 + seed)
    prompt, mask = _random_batch(rng, model.config.vocab_size, ids, tokenizer.pad_token_id, 2)
    settings = dict(_random_settings(rng), temperature=rng.choice([0.5, 1.0]), **options)
    with torch.random.fork_rng():  # leave the global generator as later tests expect it
        torch.manual_seed(seed)
        expected = reference_generate(model, prompt, mask, mask_id=ids.mask, eos_id=ids.eos, eot_id=ids.eot, **settings)
        torch.manual_seed(seed)
        got = generate_exact(model, prompt, mask, LLaDASamplerConfig(**settings), ids)
    assert torch.equal(got.sequences, expected), settings


def test_eos_confidence_exclusion_at_every_temperature_is_an_option(tokenizer, ids):
    """The reference drops EOS from the confidence only at temperature 0; the option extends that to every
    temperature, and must change what a seeded EOS-loving run produces."""
    model = _eos_loving_model(tokenizer, ids, 21)
    prompt = torch.randint(20, 300, (2, 6))
    base = LLaDASamplerConfig(gen_length=32, block_length=16, steps=8, temperature=1.0, confidence_eos_eot_inf=True)
    reference_like = generate_exact(model, prompt, None, base, ids, torch.Generator().manual_seed(3)).generated
    everywhere = LLaDASamplerConfig(**{**base.to_dict(), "confidence_eos_every_temperature": True})
    extended = generate_exact(model, prompt, None, everywhere, ids, torch.Generator().manual_seed(3)).generated
    assert not torch.equal(reference_like, extended)
