"""Training losses of the variants on a batch of fixed-length rows (prompt of ``prompt_length`` tokens, then the
answer region). Only answer tokens are ever masked or predicted; the puzzle is the prompt.

Which variant takes which loss is its entry in :mod:`.variants`.

* diffusion (``mdm``, ``sidm``, ``scdm``): the masked-diffusion ELBO. Per row t ~ U(ε, 1), each answer token is
  masked with probability t (at least one), the row is *reordered* clean-first (clean tokens, then masked ones in
  a random order; every token keeps its true position id) and the variant's pattern applied; loss = Σ CE/t over
  masked tokens / (rows × answer length) — the linear schedule's weight dα/(1−α) = 1/t;
* ``ar``: causal next-token loss on the answer region;
* ``ar-mtp``: a random cut in the answer; the input is the prefix and MASK tokens for the rest; full attention over
  the prefix and the next w MASK positions (w uniform in 1..rest when the window is ``None``, one model serving
  every w at inference); loss = mean CE over those w positions;
* ``ar-ntp``: the same input with every remaining MASK visible, loss on the first one only (the control).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latent_darm.latent_tokens.patterns import AttentionRule, causal_pattern, diffusion_pattern, window_pattern
from latent_darm.models.llada.modeling import LLaDAModelLM

EPS = 1e-3


@dataclass
class Batch:
    """One forward pass's inputs and targets: ``labels`` hold -100 where no loss is taken; ``weights`` [B, T]."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    pattern: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


def diffusion_batch(
    rows: torch.Tensor,
    prompt_length: int,
    mask_id: int,
    attention: AttentionRule,
    generator: torch.Generator,
    *,
    noise_puzzle: bool = False,
    pad_id: int | None = None,
) -> Batch:
    """A diffusion variant's batch under its ``attention`` rule (:mod:`.patterns`). With ``noise_puzzle`` (the
    authors' ``-tat`` checkpoints) the puzzle cells are noised and predicted too
    (not [BOS], [SEP] or ``pad_id`` padding); the loss is then normalised by the noisable cells of each row."""
    batch, length = rows.shape
    answer = length - prompt_length
    t = EPS + (1 - EPS) * torch.rand(batch, 1, generator=generator)
    noisable = torch.zeros(batch, length, dtype=torch.bool)
    noisable[:, prompt_length:] = True
    if noise_puzzle:
        noisable[:, 1 : prompt_length - 1] = True if pad_id is None else rows[:, 1 : prompt_length - 1] != pad_id
    masked = torch.zeros(batch, length, dtype=torch.bool)
    masked[:, prompt_length:] = torch.rand(batch, answer, generator=generator) < t
    if noise_puzzle:
        masked[:, :prompt_length] = noisable[:, :prompt_length] & (
            torch.rand(batch, prompt_length, generator=generator) < t
        )
    forced = prompt_length + torch.randint(answer, (batch,), generator=generator)
    none = ~masked.any(1)
    masked[none, forced[none]] = True
    # clean first, then masked; a random order within each group (ties impossible: keys differ by < 1)
    order = torch.argsort(masked.float() * 2 + torch.rand(batch, length, generator=generator), dim=1)
    tokens = rows.gather(1, order)
    is_masked = masked.gather(1, order)
    clean = length - masked.sum(1)
    input_ids = torch.where(is_masked, torch.full_like(tokens, mask_id), tokens)
    labels = torch.where(is_masked, tokens, torch.full_like(tokens, -100))
    weights = is_masked.float() / t / noisable.sum(1, keepdim=True)
    return Batch(input_ids, order, diffusion_pattern(attention, clean, length), labels, weights)


def ar_batch(rows: torch.Tensor, prompt_length: int) -> Batch:
    """Next-token: column i predicts token i+1 for the answer tokens."""
    length = rows.shape[1]
    labels = torch.full_like(rows, -100)
    labels[:, prompt_length - 1 : -1] = rows[:, prompt_length:]
    weights = (labels != -100).float() / (length - prompt_length)
    return Batch(rows, None, causal_pattern(length), labels, weights)


def window_batch(
    rows: torch.Tensor, prompt_length: int, mask_id: int, window: int | None, generator: torch.Generator, *, ntp: bool
) -> Batch:
    """``ar-mtp`` (``ntp=False``) or ``ar-ntp`` (``ntp=True``) on a random cut per row."""
    batch, length = rows.shape
    answer = length - prompt_length
    cut = torch.randint(answer, (batch,), generator=generator)  # clean answer tokens
    rest = answer - cut
    if ntp:
        w = rest
    elif window is None:
        w = 1 + (torch.rand(batch, generator=generator) * rest).long()
    else:
        w = rest.clamp(max=window)
    idx = torch.arange(length)[None]
    start = prompt_length + cut[:, None]
    masked = idx >= start
    input_ids = torch.where(masked, torch.full_like(rows, mask_id), rows)
    loss_end = start + 1 if ntp else start + w[:, None]
    in_loss = masked & (idx < loss_end)
    labels = torch.where(in_loss, rows, torch.full_like(rows, -100))
    weights = in_loss.float() / in_loss.sum(1, keepdim=True)
    return Batch(input_ids, None, window_pattern(prompt_length + cut + w, length), labels, weights)


def excluded_ids(model: LLaDAModelLM) -> list[int]:
    """Ids never to predict: [MASK] (a committed mask would look undecoded), [PAD] and the embedding rows past
    the vocabulary (not tokens)."""
    config = model.config
    assert config.embedding_size is not None
    ids = [config.mask_token_id, *range(config.vocab_size, config.embedding_size)]
    return ids if config.pad_token_id is None else [*ids, config.pad_token_id]


def batch_loss(model: LLaDAModelLM, batch: Batch, *, no_special_logits: bool = False) -> torch.Tensor:
    """Σ weights × CE over the labelled positions, averaged over rows; with ``no_special_logits`` the softmax runs
    over real answer symbols only (:func:`excluded_ids` at −inf), as the authors' training."""
    device = model.device
    pattern = batch.pattern.to(device)
    out = model(
        batch.input_ids.to(device),
        position_ids=None if batch.position_ids is None else batch.position_ids.to(device),
        attention_pattern=pattern,
    )
    assert out.logits is not None
    logits = out.logits.float()
    if no_special_logits:
        logits = logits.index_fill(-1, torch.tensor(excluded_ids(model), device=device), float("-inf"))
    labels = batch.labels.to(device)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none")
    ce = ce.view_as(labels)  # 0 where no loss is taken (never inf × 0 at an excluded label)
    return (ce * batch.weights.to(device)).sum() / labels.shape[0]
