"""Instruction tuning of an autoregressive executor (any Hugging Face causal LM): next-token cross-entropy on the
assistant's tokens.

Rows are right-padded, so positions are the same as unpadded. By default prompt and padding positions carry no
target (ordinary SFT: the loss is the mean over the reply tokens of the batch). ``prompt_loss_weight`` > 0 also
trains on the prompt tokens at that weight — language-model signal on every token, which speeds up learning a
lot when a model is trained from scratch rather than from a pretrained checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from latent_darm.errors import ConfigError
from latent_darm.training.sft import SFTConfig, SFTExample, TrainHistory, pad_batch, run_sft


def collate_right(batch: Sequence[SFTExample], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T], is_reply [B, T] bool — True on the reply tokens)."""
    return pad_batch(batch, pad_token_id, "right")


def token_weights(attention_mask: torch.Tensor, is_reply: torch.Tensor, prompt_loss_weight: float) -> torch.Tensor:
    """Loss weight of each *target* position [B, T]: 1 on reply tokens, ``prompt_loss_weight`` on prompt tokens
    (never on the first token, which nothing predicts), 0 on padding."""
    weights = torch.where(is_reply, 1.0, prompt_loss_weight) * attention_mask
    weights[:, 0] = 0.0
    return weights


def causal_lm_loss(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ w·CE / Σ w of predicting token t from tokens < t, for ids and weights [B, T]. The LM head runs only
    where a weight is non-zero."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    w = weights[:, 1:].to(hidden.device)
    keep = w > 0
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    token_loss = F.cross_entropy(logits.float(), input_ids[:, 1:].to(hidden.device)[keep], reduction="none")
    return (token_loss * w[keep]).sum() / w[keep].sum()


def train_causal_sft(
    model: PreTrainedModel,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    *,
    pad_token_id: int | None = None,
    prompt_loss_weight: float = 0.0,
    progress: bool = True,
    description: str = "executor SFT",
) -> TrainHistory:
    """Fine-tune ``model`` in place on ``examples`` (responses already end in the end-of-turn token)."""
    pad = pad_token_id if pad_token_id is not None else model.config.pad_token_id
    if pad is None:
        raise ConfigError("no pad token id: pass pad_token_id or set it in the model config")
    if not 0.0 <= prompt_loss_weight <= 1.0:
        raise ConfigError(f"prompt_loss_weight must be in [0, 1], got {prompt_loss_weight}")
    if any(not e.response_ids for e in examples):
        raise ConfigError("an example has an empty response; nothing to learn")

    def loss_fn(m: torch.nn.Module, batch: list[SFTExample], generator: torch.Generator) -> torch.Tensor:
        ids, attention, is_reply = collate_right(batch, pad)
        weights = token_weights(attention, is_reply, prompt_loss_weight)
        return causal_lm_loss(model, ids.to(model.device), attention.to(model.device), weights)

    return run_sft(model, examples, config, loss_fn, description=description, progress=progress)
