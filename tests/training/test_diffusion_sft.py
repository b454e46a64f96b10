"""LLaDA's SFT objective: the prompt is never masked, masked tokens are weighted by 1/t, and it trains."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.models.tiny import tiny_llada_config
from latent_darm.training.diffusion_sft import (
    collate_left,
    masked_diffusion_loss,
    sample_mask_ratio,
    train_diffusion_sft,
)
from latent_darm.training.sft import SFTConfig, SFTExample, bucketed_batches, make_optimizer

PAD, EOS, MASK = 5, 1, 6


def _examples() -> list[SFTExample]:
    return [
        SFTExample((0, 10, 11, 12), (20, 21, 2, EOS, EOS)),
        SFTExample((0, 13), (22, 2, EOS, EOS, EOS)),
        SFTExample((0, 14, 15, 16, 17, 18), (23, 24, 25, 2, EOS)),
    ]


def _model(tokenizer, **overrides) -> LLaDAModelLM:
    torch.manual_seed(0)
    config = tiny_llada_config(tokenizer, **overrides)
    assert (config.mask_token_id, config.eos_token_id) == (MASK, EOS)
    return LLaDAModelLM(config)


def test_collate_left_pads_on_the_left_and_marks_the_response():
    ids, attention, response = collate_left(_examples(), PAD)
    assert ids.shape == (3, 11)
    assert ids[1].tolist() == [PAD] * 4 + [0, 13, 22, 2, EOS, EOS, EOS]
    assert attention is not None and attention[1].tolist() == [0] * 4 + [1] * 7
    assert response.sum(1).tolist() == [5, 5, 5]
    assert response[:, -5:].all() and not response[:, :-5].any()


def test_mask_ratio_is_in_range_and_stratified():
    g = torch.Generator().manual_seed(0)
    t = sample_mask_ratio(8, 1e-3, g, stratified=True)
    assert ((t >= 1e-3) & (t <= 1)).all()
    # One value in each eighth of the interval.
    assert sorted(((t - 1e-3) / (1 - 1e-3) * 8).floor().long().tolist()) == list(range(8))


def test_prompt_is_never_masked_and_only_masked_positions_count(tokenizer, monkeypatch):
    model = _model(tokenizer)
    ids, attention, response = collate_left(_examples(), PAD)
    seen = {}
    forward = model.forward

    def spy(noisy, attention_mask=None, **kwargs):
        seen["noisy"] = noisy.clone()
        return forward(noisy, attention_mask, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        masked_diffusion_loss(model, ids, attention, response, MASK, torch.full((3,), 0.9), g)
        noisy = seen["noisy"]
        assert torch.equal(noisy[~response], ids[~response])  # prompt and padding untouched
        assert (noisy[response] == MASK).any()
        changed = noisy != ids
        assert torch.equal(changed, noisy == MASK)


def test_loss_is_weighted_by_one_over_t_and_normalised_by_response_length(tokenizer):
    model = _model(tokenizer)
    with torch.no_grad():
        model.model.transformer.ff_out.weight.zero_()  # uniform predictions: every masked token costs log V
    log_v = math.log(model.config.embedding_size)
    ids, attention, response = collate_left(_examples(), PAD)
    # t = 1 masks every response token: loss = log V exactly.
    loss = masked_diffusion_loss(model, ids, attention, response, MASK, torch.ones(3), torch.Generator())
    assert loss.item() == pytest.approx(log_v, rel=1e-5)
    # Smaller t: the masked share is reweighted by 1/t, so the estimate stays log V per token on average.
    t = torch.tensor([0.25, 0.5, 0.75])
    g = torch.Generator().manual_seed(3)
    loss = masked_diffusion_loss(model, ids, attention, response, MASK, t, g)
    g = torch.Generator().manual_seed(3)
    masked = (torch.rand(ids.shape, generator=g) < t[:, None]) & response
    expected = sum(masked[b].sum().item() * log_v / (t[b].item() * 5) for b in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_training_reduces_the_loss(tokenizer):
    model = _model(tokenizer)
    examples = _examples() * 4
    history = train_diffusion_sft(
        model, examples, SFTConfig(steps=40, batch_size=6, lr=3e-3, warmup_steps=2), pad_token_id=PAD, progress=False
    )
    assert len(history.losses) == 40 and history.examples == 240
    assert sum(history.losses[-8:]) / 8 < 0.6 * sum(history.losses[:8]) / 8
    assert not model.training


def test_bad_settings_are_config_errors(tokenizer):
    model = _model(tokenizer)
    config = SFTConfig(steps=1, batch_size=1)
    with pytest.raises(ConfigError, match="mask token"):
        train_diffusion_sft(model, _examples(), config, pad_token_id=MASK, progress=False)
    with pytest.raises(ConfigError, match="empty response"):
        train_diffusion_sft(model, [SFTExample((0,), ())], config, pad_token_id=PAD, progress=False)
    with pytest.raises(ConfigError, match="contains the mask token"):
        train_diffusion_sft(model, [SFTExample((0, MASK), (2,))], config, pad_token_id=PAD, progress=False)
    with pytest.raises(ConfigError, match="steps"):
        SFTConfig(steps=0, batch_size=1)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_warms_up_then_decays_to_the_floor(schedule):
    config = SFTConfig(steps=100, batch_size=1, lr=2e-3, warmup_steps=10, min_lr_ratio=0.1, schedule=schedule)
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), config)
    rates = []
    for _ in range(config.steps):
        rates.append(optimizer.param_groups[0]["lr"] / config.lr)
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.5) and rates[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(0.1, abs=0.01) and min(rates[10:]) >= 0.1 - 1e-9
    halfway = rates[55]  # cosine and linear agree at the midpoint of the decay: 0.1 + 0.9 × 0.5
    assert halfway == pytest.approx(0.55, abs=1e-9)
    if schedule == "cosine":
        assert rates[30] > 0.1 + 0.9 * (1 - 20 / 90)  # cosine stays above the straight line early on


def test_bucketed_batches_group_similar_lengths_and_cover_every_example():
    lengths = [1, 50, 2, 49, 3, 48, 4, 47] * 8
    batches = list(bucketed_batches(lengths, batch_size=4, steps=16, seed=0))
    assert len(batches) == 16
    assert sorted(i for b in batches for i in b) == list(range(64))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3 for b in batches)
