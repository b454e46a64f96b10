"""Decoding cost and bookkeeping: steps, tokens per pass, k per step, candidates, AR windows."""

from __future__ import annotations

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.decoding import DecodeSettings, sample
from latent_darm.latent_tokens.objectives import excluded_ids
from latent_darm.latent_tokens.train import TrainSettings, new_model
from latent_darm.latent_tokens.variants import AR, AR_MTP, MDM, SCDM, SIDM, get_variant

PROMPT, ANSWER = 5, 7
GREEDY = DecodeSettings(temperature=0)


@pytest.fixture(scope="module")
def model():
    return new_model(TrainSettings(layers=1, d_model=32, heads=2), max_length=PROMPT + ANSWER).eval()


def _prompts() -> torch.Tensor:
    return torch.randint(6, 15, (3, PROMPT), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("latent", [0, 2, 3])
def test_scdm_pass_holds_clean_tokens_n_latents_and_the_decoded_one(model, latent):
    out = SCDM.decode(model, _prompts(), ANSWER, latent, DecodeSettings(), torch.Generator())
    expected = sum(PROMPT + s + min(latent, ANSWER - s - 1) + 1 for s in range(ANSWER))
    assert out.forward_passes == ANSWER and out.tokens == expected
    assert not (out.answers == model.config.mask_token_id).any()


def test_k_tokens_per_step_and_confidence_candidates(model):
    settings = DecodeSettings(k=2, selection="confidence", candidates=3)
    out = SIDM.decode(model, _prompts(), ANSWER, None, settings, torch.Generator())
    assert out.forward_passes == 4  # 2 + 2 + 2 + 1
    # each pass: clean tokens plus min(3, remaining) candidates, no latents for SIDM
    assert out.tokens == sum(PROMPT + d + min(3, ANSWER - d) for d in (0, 2, 4, 6))


def test_same_generator_seed_same_answers(model):
    a = SCDM.decode(model, _prompts(), ANSWER, 2, DecodeSettings(), torch.Generator().manual_seed(1))
    b = SCDM.decode(model, _prompts(), ANSWER, 2, DecodeSettings(), torch.Generator().manual_seed(1))
    assert torch.equal(a.answers, b.answers)


@pytest.mark.parametrize(("variant", "window"), [("ar", None), ("ar-mtp", 1), ("ar-mtp", 3), ("ar-ntp", None)])
def test_autoregressive_pass_sizes(model, variant, window):
    out = get_variant(variant).decode(model, _prompts(), ANSWER, window, GREEDY)
    if variant == "ar":
        expected = sum(PROMPT + s for s in range(ANSWER))
    else:
        expected = sum(PROMPT + s + (ANSWER - s if window is None else min(window, ANSWER - s)) for s in range(ANSWER))
    assert out.forward_passes == ANSWER and out.tokens == expected


def test_ar_decoding_is_greedy_continuation_of_the_causal_model(model):
    """Left-to-right AR decoding equals running the causal model on its own growing output."""
    prompts = _prompts()
    out = AR.decode(model, prompts, ANSWER, None, GREEDY)
    full = torch.cat((prompts, out.answers), dim=1)
    from latent_darm.latent_tokens.patterns import causal_pattern

    logits = model(full, attention_pattern=causal_pattern(full.shape[1])).logits[:, PROMPT - 1 : -1]
    logits[..., excluded_ids(model)] = float("-inf")  # decoding never commits [MASK], [PAD] or padding rows
    assert torch.equal(logits.argmax(-1), out.answers)


def test_bad_decoding_settings(model):
    with pytest.raises(ConfigError, match="-1"):
        SCDM.decode(model, _prompts(), ANSWER, -1, DecodeSettings(), torch.Generator())
    with pytest.raises(ConfigError, match="w must be at least 1, got 0"):
        AR_MTP.decode(model, _prompts(), ANSWER, 0, GREEDY)
    with pytest.raises(ConfigError, match="--candidates: 1 must be ≥ 2 "):
        DecodeSettings(k=2, selection="confidence", candidates=1)


def test_confidence_over_all_commits_the_most_probable_position_first(model):
    """MDM with candidates='all' at temperature 0: the first committed cell is the argmax over every masked
    position of the top probability of the plain full pass (MDM's pass is permutation-equivariant)."""
    prompts = _prompts()
    settings = DecodeSettings(selection="confidence", candidates=None, temperature=0)
    out = MDM.decode(model, prompts, ANSWER, None, settings, torch.Generator().manual_seed(3))
    canvas = torch.cat((prompts, torch.full((3, ANSWER), model.config.mask_token_id)), dim=1)
    with torch.no_grad():
        logits = model(canvas).logits[:, PROMPT:].float()
    logits[..., excluded_ids(model)] = float("-inf")
    confidence, tokens = logits.softmax(-1).max(-1)
    first = confidence.argmax(1)
    assert torch.equal(out.answers.gather(1, first[:, None])[:, 0], tokens.gather(1, first[:, None])[:, 0])
    # every step scores all remaining masked positions: the pass holds the clean tokens and all of them
    assert out.tokens == sum(PROMPT + ANSWER for _ in range(ANSWER))


def test_gumbel_sampling_follows_the_softmax_and_zero_temperature_is_argmax(model):
    logits = torch.randn(1, 1, model.config.embedding_size, generator=torch.Generator().manual_seed(0))
    _, greedy = sample(logits, model, 0.0, torch.Generator())
    allowed = logits.clone()
    allowed[..., excluded_ids(model)] = float("-inf")
    assert int(greedy) == int(allowed.argmax())
    many = logits.expand(1, 20000, -1)
    _, drawn = sample(many, model, 1.0, torch.Generator().manual_seed(1))
    assert not set(drawn.flatten().tolist()) & set(excluded_ids(model))
    frequency = torch.bincount(drawn.flatten(), minlength=logits.shape[-1]).float() / drawn.numel()
    assert torch.allclose(frequency, allowed.softmax(-1).flatten(), atol=0.015)
    hot = sample(many, model, 5.0, torch.Generator().manual_seed(1))[1]
    assert len(set(hot.flatten().tolist())) > len(set(drawn.flatten().tolist())) - 2  # flatter at T = 5
    again = sample(many, model, 1.0, torch.Generator().manual_seed(1))[1]
    assert torch.equal(drawn, again)


def test_negative_temperature_and_zero_candidates_are_refused():
    with pytest.raises(ConfigError, match="--temperature: -1"):
        DecodeSettings(temperature=-1)
    with pytest.raises(ConfigError, match="--candidates: 0"):
        DecodeSettings(selection="confidence", candidates=0)
