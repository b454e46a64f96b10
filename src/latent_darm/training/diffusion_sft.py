"""LLaDA's supervised fine-tuning objective for the masked-diffusion planner.

For each example a mask ratio t ~ U(eps, 1) is drawn; every response token (the reply, its ``<|eot_id|>`` and the
EOS padding that fills the canvas) is replaced by the mask token with probability t, and the prompt never is.
The loss is the cross-entropy on masked positions weighted by 1/t and divided by the response length — LLaDA's
SFT estimator of the negative ELBO (ML-GSAI/LLaDA ``GUIDELINES.md``). Rows are left-padded, as the sampler pads
prompts, so the model trains on the same absolute positions it will sample at.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from latent_darm.errors import ConfigError
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.training.sft import SFTConfig, SFTExample, TrainHistory, pad_batch, run_sft


def collate_left(
    batch: Sequence[SFTExample], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(input_ids [B, T], attention_mask [B, T] or None when no row is padded, response_mask [B, T] bool)."""
    ids, attention, response = pad_batch(batch, pad_token_id, "left")
    return ids, (None if bool(attention.all()) else attention), response


def sample_mask_ratio(batch: int, eps: float, generator: torch.Generator, stratified: bool = True) -> torch.Tensor:
    """t [B] in [eps, 1]. Stratified: one uniform offset, then evenly spaced (lower variance, same marginal)."""
    if stratified:
        u = (torch.rand(1, generator=generator) + torch.arange(batch) / batch) % 1.0
    else:
        u = torch.rand(batch, generator=generator)
    return eps + (1 - eps) * u


def masked_diffusion_loss(
    model: LLaDAModelLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_mask: torch.Tensor,
    mask_token_id: int,
    t: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The SFT loss for ids [B, T] with ``response_mask`` [B, T] (True on maskable positions) and ratios t [B].

    loss = 1/B Σ_b 1/|response_b| Σ_{masked i} CE(x_i) / t_b
    """
    masked = (torch.rand(input_ids.shape, generator=generator) < t[:, None]) & response_mask
    noisy = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    hidden = model(noisy.to(model.device), attention_mask, logits_slice=None).last_hidden_state
    masked = masked.to(hidden.device)
    logits = model.lm_head(hidden[masked])  # only masked positions need the LM head
    targets = input_ids.to(hidden.device)[masked]
    weights = (1.0 / t.to(hidden.device))[:, None].expand_as(masked)[masked]
    lengths = response_mask.sum(1).to(hidden.device)[:, None].expand_as(masked)[masked]
    token_loss = F.cross_entropy(logits.float(), targets, reduction="none")
    return (token_loss * weights / lengths).sum() / input_ids.shape[0]


def train_diffusion_sft(
    model: LLaDAModelLM,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    *,
    pad_token_id: int | None = None,
    eps: float = 1e-3,
    stratified: bool = True,
    progress: bool = True,
    description: str = "planner SFT",
) -> TrainHistory:
    """Fine-tune ``model`` in place on ``examples`` (responses already end in EOT and EOS padding)."""
    mask_id = model.config.mask_token_id
    pad = pad_token_id if pad_token_id is not None else model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id
    if pad == mask_id:
        raise ConfigError(f"pad token id {pad} equals the mask token id; pick another pad token")
    if not 0 < eps < 1:
        raise ConfigError(f"eps must be in (0, 1), got {eps}")
    for example in examples:
        if not example.response_ids:
            raise ConfigError("an example has an empty response; nothing to learn")
        if mask_id in example.prompt_ids or mask_id in example.response_ids:
            raise ConfigError(f"an example contains the mask token id {mask_id}")

    def loss_fn(m: torch.nn.Module, batch: list[SFTExample], generator: torch.Generator) -> torch.Tensor:
        ids, attention, response = collate_left(batch, pad)
        t = sample_mask_ratio(len(batch), eps, generator, stratified)
        if attention is not None:
            attention = attention.to(model.device)
        return masked_diffusion_loss(model, ids, attention, response, mask_id, t, generator)

    return run_sft(model, examples, config, loss_fn, description=description, progress=progress)
