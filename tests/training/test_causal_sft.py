"""Executor SFT: the loss reads the reply tokens only (unless a prompt weight is asked for), and it trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latent_darm.errors import ConfigError
from latent_darm.models.tiny import random_llama
from latent_darm.training.causal_sft import causal_lm_loss, collate_right, token_weights, train_causal_sft
from latent_darm.training.sft import SFTConfig, SFTExample

PAD = 5


def _examples() -> list[SFTExample]:
    return [
        SFTExample((0, 10, 11, 12), (20, 21, 2)),
        SFTExample((0, 13), (22, 2)),
    ]


def test_collate_right_and_weights_mask_prompt_and_padding():
    ids, attention, is_reply = collate_right(_examples(), PAD)
    assert ids.tolist() == [[0, 10, 11, 12, 20, 21, 2], [0, 13, 22, 2, PAD, PAD, PAD]]
    assert attention.tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    weights = token_weights(attention, is_reply, 0.0)
    assert weights.tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]
    weights = token_weights(attention, is_reply, 0.25)
    assert weights.tolist() == [[0, 0.25, 0.25, 0.25, 1, 1, 1], [0, 0.25, 1, 1, 0, 0, 0]]


def test_loss_is_the_mean_cross_entropy_of_the_reply_tokens(tokenizer):
    model = random_llama(tokenizer, hidden_size=32, layers=1)
    ids, attention, is_reply = collate_right(_examples(), PAD)
    loss = causal_lm_loss(model, ids, attention, token_weights(attention, is_reply, 0.0))
    logits = model(input_ids=ids, attention_mask=attention).logits
    targets = [(0, 3, 20), (0, 4, 21), (0, 5, 2), (1, 1, 22), (1, 2, 2)]  # (row, predicting position, token)
    expected = torch.stack([F.cross_entropy(logits[r, p], torch.tensor(t)) for r, p, t in targets]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_training_reduces_the_loss_and_leaves_eval_mode(tokenizer):
    model = random_llama(tokenizer, hidden_size=32, layers=1)
    history = train_causal_sft(
        model, _examples() * 8, SFTConfig(steps=40, batch_size=4, lr=1e-2, warmup_steps=2), progress=False
    )
    assert len(history.losses) == 40 and history.tokens > 0
    assert sum(history.losses[-5:]) / 5 < 0.5 * sum(history.losses[:5]) / 5
    assert not model.training


def test_bad_settings_are_config_errors(tokenizer):
    model = random_llama(tokenizer, hidden_size=32, layers=1)
    config = SFTConfig(steps=1, batch_size=1)
    with pytest.raises(ConfigError, match="prompt_loss_weight"):
        train_causal_sft(model, _examples(), config, prompt_loss_weight=2.0, progress=False)
    with pytest.raises(ConfigError, match="empty response"):
        train_causal_sft(model, [SFTExample((0,), ())], config, progress=False)
