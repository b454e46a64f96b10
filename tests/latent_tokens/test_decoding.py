"""Decoding cost and bookkeeping: steps, tokens per pass, k per step, candidates, AR windows."""

from __future__ import annotations

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens.decoding import DecodeSettings, decode_autoregressive, decode_diffusion
from latent_darm.latent_tokens.train import TrainSettings, new_model

PROMPT, ANSWER = 5, 7


@pytest.fixture(scope="module")
def model():
    return new_model(TrainSettings(layers=1, d_model=32, heads=2), max_length=PROMPT + ANSWER).eval()


def _prompts() -> torch.Tensor:
    return torch.randint(6, 15, (3, PROMPT), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("latent", [0, 2, 3])
def test_scdm_pass_holds_clean_tokens_n_latents_and_the_decoded_one(model, latent):
    out = decode_diffusion(model, _prompts(), ANSWER, "scdm", latent, DecodeSettings(), torch.Generator())
    expected = sum(PROMPT + s + min(latent, ANSWER - s - 1) + 1 for s in range(ANSWER))
    assert out.forward_passes == ANSWER and out.tokens == expected
    assert not (out.answers == model.config.mask_token_id).any()


def test_k_tokens_per_step_and_confidence_candidates(model):
    settings = DecodeSettings(k=2, selection="confidence", candidates=3)
    out = decode_diffusion(model, _prompts(), ANSWER, "sidm", None, settings, torch.Generator())
    assert out.forward_passes == 4  # 2 + 2 + 2 + 1
    # each pass: clean tokens plus min(3, remaining) candidates, no latents for SIDM
    assert out.tokens == sum(PROMPT + d + min(3, ANSWER - d) for d in (0, 2, 4, 6))


def test_same_generator_seed_same_answers(model):
    a = decode_diffusion(model, _prompts(), ANSWER, "scdm", 2, DecodeSettings(), torch.Generator().manual_seed(1))
    b = decode_diffusion(model, _prompts(), ANSWER, "scdm", 2, DecodeSettings(), torch.Generator().manual_seed(1))
    assert torch.equal(a.answers, b.answers)


@pytest.mark.parametrize(("variant", "window"), [("ar", None), ("ar-mtp", 1), ("ar-mtp", 3), ("ar-ntp", None)])
def test_autoregressive_pass_sizes(model, variant, window):
    out = decode_autoregressive(model, _prompts(), ANSWER, variant, window)
    if variant == "ar":
        expected = sum(PROMPT + s for s in range(ANSWER))
    else:
        expected = sum(PROMPT + s + (ANSWER - s if window is None else min(window, ANSWER - s)) for s in range(ANSWER))
    assert out.forward_passes == ANSWER and out.tokens == expected


def test_ar_decoding_is_greedy_continuation_of_the_causal_model(model):
    """Left-to-right AR decoding equals running the causal model on its own growing output."""
    prompts = _prompts()
    out = decode_autoregressive(model, prompts, ANSWER, "ar", None)
    full = torch.cat((prompts, out.answers), dim=1)
    from latent_darm.latent_tokens.patterns import causal_pattern

    logits = model(full, attention_pattern=causal_pattern(full.shape[1])).logits[:, PROMPT - 1 : -1]
    logits[..., model.config.vocab_size :] = float("-inf")  # decoding never commits padding rows or [MASK]
    logits[..., model.config.mask_token_id] = float("-inf")
    assert torch.equal(logits.argmax(-1), out.answers)


def test_bad_decoding_settings(model):
    with pytest.raises(ConfigError, match="-1"):
        decode_diffusion(model, _prompts(), ANSWER, "scdm", -1, DecodeSettings(), torch.Generator())
    with pytest.raises(ConfigError, match="w must be at least 1, got 0"):
        decode_autoregressive(model, _prompts(), ANSWER, "ar-mtp", 0)
    with pytest.raises(ConfigError, match="candidates=1 must be at least k=2"):
        DecodeSettings(k=2, selection="confidence", candidates=1)
