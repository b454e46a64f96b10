"""One projector-training step's arithmetic: the executor's rows, the labels and the loss; the frozen executor and
its optional LoRA; held-out validation.

Latents [B, L, d_planner] → projector → soft tokens [B, L, d_executor], placed exactly as at inference (the
executor's own ``plan_segments`` and ``splice``; prefix placement gives ``[soft ; chat prompt with assistant
header]``), followed by the target reply (``TrainingExample.reply_text`` and the chat template's end of turn). Rows
are right-padded and positions count real inputs from 0, as in the left-padded inference batch. Labels are -100 on
the soft tokens, the prompt and the padding and the target ids on the target's own positions (Hugging Face shifts
them inside the loss); the authors' code appended the ignored labels at the end instead, which shifts every label
by L.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from latent_darm.errors import ConfigError
from latent_darm.extras import require
from latent_darm.grading import grade
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.splice import position_ids_from_mask, splice
from latent_darm.pipelines.latent import add_latent_noise
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.projector.model import Projector
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import LatentCache
from latent_darm.training.projector_config import ProjectorTrainingConfig
from latent_darm.training.projector_data import noise_generator

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------------------
# Inputs: the same rows inference builds, plus the target
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    """One pair as the executor reads it: ids before and after the L soft tokens (``plan_segments``), then the
    target reply ids (answer and end of turn)."""

    example: TrainingExample
    prompt: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    target: tuple[int, ...]


def encode_examples(
    executor: AutoregressiveLM,
    examples: Sequence[TrainingExample],
    templates: PromptTemplates,
    placement: str,
    plan_length: int,
) -> list[EncodedExample]:
    """Tokenize every example once, with the latent-executor prompt and soft-token placement the latent pipeline
    uses (:meth:`PromptTemplates.soft_token_prompt`), so training and evaluation place the soft tokens alike."""
    limit = executor.context_length
    encoded = []
    for example in examples:
        prompt = templates.soft_token_prompt(example.question, example.answer_type, placement)
        before, after = executor.plan_segments(prompt, placement)
        target = executor.reply_ids(prompt, example.reply_text())
        length = len(before) + plan_length + len(after) + len(target)
        if limit is not None and length > limit:
            raise ConfigError(
                f"example {example.id}: {length} positions with its {plan_length} soft tokens and target; the "
                f"executor's max_position_embeddings is {limit}"
            )
        encoded.append(EncodedExample(example, prompt, tuple(before), tuple(after), tuple(target)))
    return encoded


@dataclass
class TrainingBatch:
    """Right-padded executor inputs: inputs_embeds [B, T, d]; attention_mask, position_ids, labels [B, T]."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor


def right_pad(rows: Sequence[torch.Tensor], labels: Sequence[Sequence[int]]) -> TrainingBatch:
    """Rows [T_i, d] and their labels → one batch with zeros / -100 on the right and positions 0..T_i-1."""
    width = max(r.shape[0] for r in rows)
    first = rows[0]
    embeds = first.new_zeros((len(rows), width, first.shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=first.device)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long, device=first.device)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        embeds[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = 1
        targets[i, : len(label)] = torch.tensor(list(label), dtype=torch.long, device=first.device)
    return TrainingBatch(embeds, mask, position_ids_from_mask(mask), targets)


def build_batch(executor: AutoregressiveLM, soft: torch.Tensor, encoded: Sequence[EncodedExample]) -> TrainingBatch:
    """soft [B, L, d_executor] → ``[before ; soft ; after ; target]`` per row; only the target carries labels, on
    its own positions."""
    rows, labels = [], []
    for tokens, item in zip(soft, encoded, strict=True):
        prompt = splice(tokens, executor.embed(item.before), executor.embed(item.after))
        rows.append(torch.cat([prompt, executor.embed(item.target)]))
        labels.append([IGNORE_INDEX] * prompt.shape[0] + list(item.target))
    return right_pad(rows, labels)


def answer_loss(model: nn.Module, batch: TrainingBatch) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target tokens (the model shifts labels by one) and how many there were."""
    out = model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        labels=batch.labels,
        use_cache=False,
    )
    return out.loss, int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


# ----------------------------------------------------------------------------------------------------------------
# Models: frozen executor, optional LoRA
# ----------------------------------------------------------------------------------------------------------------


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)
    model.eval()


def lora_config(config: ProjectorTrainingConfig) -> Any:
    """The one LoRA recipe (a ``peft.LoraConfig``): on the latent channel's executor and, in the toy demo, on the
    text channel's, so neither channel gets an adaptation the other lacks."""
    peft = require("peft", "--lora")
    return peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(executor: AutoregressiveLM, config: ProjectorTrainingConfig) -> nn.Module:
    """Wrap the executor's model with LoRA on every attention and MLP projection (peft ``all-linear``: all linear
    layers but the LM head); only the adapter's weights train. ``executor.model`` becomes the peft model."""
    peft = require("peft", "--lora")
    lora = lora_config(config)
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        executor.model = peft.get_peft_model(executor.model, lora).eval()
    return executor.model


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """Held-out loss (mean over all target tokens) and greedy accuracy, over every process's share."""

    loss: float
    accuracy: float
    n: int


@torch.no_grad()
def validate(
    projector: Projector,
    executor: AutoregressiveLM,
    cache: LatentCache,
    encoded: Sequence[EncodedExample],
    config: ProjectorTrainingConfig,
    accelerator: Accelerator,
) -> Validation:
    """Each process takes every k-th held-out example; sums are reduced across processes."""
    share = list(encoded)[accelerator.process_index :: accelerator.num_processes]
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss sum, tokens, correct, n
    placement = projector.config.placement
    for first in range(0, len(share), config.eval_batch_size):
        items = share[first : first + config.eval_batch_size]
        latents = cache.load([item.example.id for item in items]).to(accelerator.device).float()
        generator = noise_generator(config.seed, -1, first, accelerator.process_index, latents.device)
        soft = projector(add_latent_noise(latents, config.latent_noise, generator))
        loss, tokens = answer_loss(executor.model, build_batch(executor, soft, items))
        answers = executor.generate_from_embeddings(
            soft,
            [item.prompt for item in items],
            placement=placement,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.eval_batch_size,
        )
        correct = sum(
            grade(answer.text, item.example.target, item.example.answer_type, truncated=answer.truncated).correct
            for answer, item in zip(answers, items, strict=True)
        )
        totals += torch.tensor([float(loss) * tokens, tokens, correct, len(items)], device=totals.device)
    totals = accelerator.reduce(totals, "sum")
    loss_sum, tokens, correct, n = totals.tolist()
    return Validation(loss_sum / max(tokens, 1.0), correct / max(n, 1.0), int(n))
