"""What both supervised fine-tuning loops share: the example type, the settings, batching, the schedule, the bar.

The diffusion loop (``diffusion_sft``) and the causal loop (``causal_sft``) differ only in how a batch becomes a
loss; everything around that — length-bucketed batches, AdamW with warm-up and decay, the progress bar, the loss
history — lives here once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_polynomial_decay_schedule_with_warmup

from latent_darm.errors import ConfigError, DataError
from latent_darm.progress import progress_bar


@dataclass(frozen=True)
class SFTExample:
    """One chat-formatted pair as token ids: ``prompt_ids`` is never a target, ``response_ids`` always is.

    ``task`` names the mixture component it came from (for bookkeeping only).
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    task: str = ""

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def pad_batch(
    batch: Sequence[SFTExample], pad_token_id: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + response rows padded to one width on ``side``: (input_ids [B, T], attention_mask [B, T],
    is_response [B, T] bool — True on the response tokens)."""
    width = max(len(e) for e in batch)
    ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    is_response = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, example in enumerate(batch):
        tokens = list(example.prompt_ids) + list(example.response_ids)
        start = width - len(tokens) if side == "left" else 0
        ids[row, start : start + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, start : start + len(tokens)] = 1
        is_response[row, start + len(example.prompt_ids) : start + len(tokens)] = True
    return ids, attention, is_response


@dataclass(frozen=True)
class SFTConfig:
    """Optimisation settings shared by both loops. ``warmup_steps`` ramp linearly; then ``schedule`` decays the
    learning rate to ``min_lr_ratio`` × ``lr`` at the last step."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 20
    schedule: Literal["cosine", "linear"] = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be ≥ 1, got {self.steps} and {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "linear"):
            raise ConfigError(f"schedule must be 'cosine' or 'linear', got {self.schedule!r}")


@dataclass
class TrainHistory:
    """Per-step training losses and what the run cost."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    examples: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(
    model: nn.Module, config: SFTConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW without weight decay on norms and biases (the usual split), and transformers' warm-up/decay schedule
    (cosine, or linear as a power-1 polynomial) ending at ``min_lr_ratio`` × ``lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    if config.schedule == "cosine":
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, config.warmup_steps, config.steps, min_lr_rate=config.min_lr_ratio
        )
    else:
        scheduler = get_polynomial_decay_schedule_with_warmup(
            optimizer, config.warmup_steps, config.steps, lr_end=config.lr * config.min_lr_ratio, power=1.0
        )
    return optimizer, scheduler


def bucketed_batches(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of indices. Each epoch is shuffled, cut into pools of 16 batches, and each pool sorted by
    length before it is cut into batches, so a batch holds examples of similar length (little padding)."""
    if not lengths:
        raise DataError("no training examples")
    rng = random.Random(seed)
    pool_size = batch_size * 16
    produced = 0
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lambda i: lengths[i])
            batches += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield batch
            produced += 1
            if produced == steps:
                return


def run_sft(
    model: nn.Module,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    loss_fn: Callable[[nn.Module, list[SFTExample], torch.Generator], torch.Tensor],
    *,
    description: str,
    progress: bool = True,
) -> TrainHistory:
    """The loop: batches → ``loss_fn`` → AdamW step with clipping and the schedule. Leaves ``model`` in eval mode."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer, scheduler = make_optimizer(model, config)
    history = TrainHistory()
    started = time.perf_counter()
    model.train()
    with progress_bar(progress, "loss {task.fields[loss]:.3f}") as bar:
        task = bar.add_task(description, total=config.steps, loss=float("nan"))
        for indices in bucketed_batches([len(e) for e in examples], config.batch_size, config.steps, config.seed):
            batch = [examples[i] for i in indices]
            loss = loss_fn(model, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            history.losses.append(float(loss.detach()))
            history.examples += len(batch)
            history.tokens += sum(len(e) for e in batch)
            smoothed = sum(history.losses[-20:]) / len(history.losses[-20:])
            bar.update(task, advance=1, loss=smoothed)
    history.seconds = time.perf_counter() - started
    model.eval()
    return history
