"""Stage 2 of projector training: fit the projector on cached plan latents while both language models stay frozen.

One step: latents [B, L, d_planner] from the :class:`LatentCache` → projector → soft tokens [B, L, d_executor],
placed exactly as at inference (the executor's own ``plan_segments`` and ``splice``; prefix placement gives
``[soft ; chat prompt with assistant header]``), followed by the target reply (``TrainingExample.reply_text`` and
the chat template's end of turn). Rows are right-padded and positions count real inputs from 0, as in the left-padded
inference batch. Labels are -100 on the soft tokens, the prompt and the padding and the target ids on the target's
own positions (Hugging Face shifts them inside the loss); the authors' code appended the ignored labels at the end
instead, which shifts every label by L.

Around the step: accelerate (devices, processes, gradient accumulation, mixed precision), AdamW with the
transformers cosine schedule, periodic validation (held-out loss and greedy held-out accuracy) that keeps the best
projector by held-out loss in ``OUT/projector/``, and checkpoints in ``OUT/checkpoints/step-N/`` from which a rerun
resumes exactly: same weights, optimizer, schedule and data order (a seeded shuffle per epoch, already-seen batches
skipped). Optional LoRA on the executor (peft) trains together with the projector, never instead of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import get_cosine_schedule_with_warmup

from latent_darm.bridge.projector import Projector
from latent_darm.config_diff import first_difference, short
from latent_darm.errors import CheckpointError, ConfigError, DataError
from latent_darm.extras import require
from latent_darm.figures import agg_figure
from latent_darm.grading import grade
from latent_darm.io import atomic_write_json, atomic_write_text
from latent_darm.models.executor import CausalExecutor
from latent_darm.models.splice import position_ids_from_mask, splice
from latent_darm.pipelines.factory import ADAPTER_DIR
from latent_darm.pipelines.latent import add_latent_noise
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.progress import progress_bar
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import LatentCache

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
RUN_FILE = "run.json"
STATE_FILE = "trainer_state.json"
HISTORY_FILE = "history.jsonl"
CURVE_FILE = "curve.png"
PROJECTOR_DIR = "projector"
CHECKPOINTS_DIR = "checkpoints"
MIXED_PRECISION = ("auto", "no", "bf16")
# Settings that change neither the weights nor the data order: a rerun may change them.
COSMETIC = frozenset({"eval_batch_size", "log_every", "keep_checkpoints"})


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectorTrainingConfig:
    """Stage-2 settings; defaults are the paper's. The effective batch is ``batch_size`` (per process and
    micro-step) × ``grad_accum`` × processes. ``latent_noise`` > 0 is the noised-latents control (Gaussian noise
    relative to the latents' RMS, also applied in validation). LoRA on the executor is an ablation, off by default.
    Weight decay applies to the projector's matrices only, as in the authors' Hugging Face ``Trainer`` (which exempts
    biases and norm weights); ``decay_biases_and_norms`` decays them too."""

    lr: float = 3e-4
    weight_decay: float = 1e-3
    decay_biases_and_norms: bool = False
    warmup_steps: int = 300
    epochs: int = 3
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int | None = None
    grad_clip: float | None = 1.0
    mixed_precision: str = "auto"
    eval_every: int = 500
    save_every: int = 500
    max_new_tokens: int = 64
    seed: int = 0
    latent_noise: float = 0.0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_lr: float = 5e-4
    eval_batch_size: int = 8
    log_every: int = 10
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_every", "save_every", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("eval_batch_size", "log_every", "keep_checkpoints", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("lr", "lora_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "latent_noise", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be ≥ 1, got {self.max_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}"
            )

    def resolved_mixed_precision(self) -> str:
        """``auto``: bf16 autocast on a CUDA device that supports it, none on CPU."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_accelerator(config: ProjectorTrainingConfig, cpu: bool | None = None) -> Accelerator:
    """The Accelerator a run uses. The scheduler is stepped by hand once per optimizer step (accelerate would step
    it once per process), so warm-up and decay are counted in optimizer steps however many processes run."""
    return Accelerator(
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=config.resolved_mixed_precision(),
        step_scheduler_with_optimizer=False,
        cpu=not torch.cuda.is_available() if cpu is None else cpu,
    )


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
    executor: CausalExecutor,
    examples: Sequence[TrainingExample],
    templates: PromptTemplates,
    placement: str,
    plan_length: int,
) -> list[EncodedExample]:
    """Tokenize every example once, with the latent-executor prompt the latent pipeline uses."""
    limit = executor.context_length
    encoded = []
    for example in examples:
        prompt = templates.latent_executor_prompt(example.question, example.answer_type)
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


def build_batch(executor: CausalExecutor, soft: torch.Tensor, encoded: Sequence[EncodedExample]) -> TrainingBatch:
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
# Data order: a seeded permutation per epoch, so a resumed run sees the batches an uninterrupted one would
# ----------------------------------------------------------------------------------------------------------------


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) drawn from ``seed`` and the epoch; accelerate calls ``set_epoch``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.n, generator=generator).tolist()

    def __len__(self) -> int:
        return self.n


class _Indices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class LatentCollator:
    """Example indices → {"index": [B], "latents": [B, L, d] fp16 from the cache}."""

    def __init__(self, cache: LatentCache, keys: Sequence[str]) -> None:
        self.cache, self.keys = cache, list(keys)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {
            "index": torch.tensor(indices, dtype=torch.long),
            "latents": self.cache.load([self.keys[i] for i in indices]),
        }


def noise_generator(seed: int, epoch: int, batch: int, rank: int, device: torch.device) -> torch.Generator:
    """The noised-latents control's generator for one micro-batch, a pure function of where the batch is."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{batch}:{rank}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# ----------------------------------------------------------------------------------------------------------------
# Models: frozen executor, optional LoRA
# ----------------------------------------------------------------------------------------------------------------


def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)
    model.eval()


def add_lora(executor: CausalExecutor, config: ProjectorTrainingConfig) -> nn.Module:
    """Wrap the executor's model with LoRA on every attention and MLP projection (peft ``all-linear``: all linear
    layers but the LM head); only the adapter's weights train. ``executor.model`` becomes the peft model."""
    peft = require("peft", "--lora")

    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )
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
    executor: CausalExecutor,
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


# ----------------------------------------------------------------------------------------------------------------
# Run directory: identity, state, checkpoints, best projector, history and curve
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    """Where a run is: optimizer steps done, the epoch and micro-batches consumed in it, the best validation."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        values = json.loads(path.read_text())
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _fingerprint(items: Sequence[EncodedExample]) -> dict[str, Any]:
    rows = [[i.example.id, i.prompt, list(i.target)] for i in items]
    return {"n": len(rows), "sha256": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]}


def run_identity(
    projector: Projector,
    cache: LatentCache,
    train: Sequence[EncodedExample],
    held_out: Sequence[EncodedExample],
    config: ProjectorTrainingConfig,
) -> dict[str, Any]:
    """Everything that decides the trained weights; a rerun in the same directory must match it."""
    spec = json.dumps(cache.spec, sort_keys=True)
    return {
        "training": run_identity_settings(config),
        # The sampler settings are part of the latents' identity already (an earlier run did not record them here).
        "projector": {k: v for k, v in projector.config.to_dict().items() if k not in ("training", "planner_sampler")},
        "latents": hashlib.sha256(spec.encode()).hexdigest()[:16],
        "train": _fingerprint(train),
        "held_out": _fingerprint(held_out),
    }


def _refuse_other(out: Path, identity: dict[str, Any], partial: bool = False) -> bool:
    """Raise when ``out`` records another identity (``partial``: only the top-level keys given); False if fresh."""
    path = out / RUN_FILE
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    if partial:
        stored = {key: value for key, value in stored.items() if key in identity}
    difference = first_difference(stored, json.loads(json.dumps(identity)))
    if difference is not None:
        key, old, new = difference
        raise ConfigError(
            f"{out} was made with a different '{key}' ({short(old)} there, {short(new)} now); "
            "use another --out directory"
        )
    return True


def check_settings(out: str | Path, config: ProjectorTrainingConfig) -> None:
    """The training settings part of :func:`check_run`, for a check before any model is loaded."""
    _refuse_other(Path(out), {"training": run_identity_settings(config)}, partial=True)


def run_identity_settings(config: ProjectorTrainingConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in COSMETIC}


def check_run(out: Path, identity: dict[str, Any], accelerator: Accelerator) -> None:
    """Refuse a directory made with another configuration; record the identity of a fresh one."""
    if not _refuse_other(out, identity) and accelerator.is_main_process:
        atomic_write_json(out / RUN_FILE, identity)
    accelerator.wait_for_everyone()


def checkpoint_path(out: Path, step: int) -> Path:
    return out / CHECKPOINTS_DIR / f"step-{step}"


def _step_of(path: Path) -> int:
    return int(path.name.removeprefix("step-"))


def load_latest_good_checkpoint(accelerator: Accelerator, out: Path, strict: bool) -> tuple[Path, TrainerState] | None:
    """Load the newest checkpoint that reads back whole; a damaged one (a truncated file, say: a full disk, a copy
    cut short) is skipped with a warning for the one before it. None when there is no checkpoint; an error when
    every checkpoint is damaged (starting afresh silently would hide the damage)."""
    complete = sorted((p.parent for p in (out / CHECKPOINTS_DIR).glob(f"step-*/{STATE_FILE}")), key=_step_of)
    reasons = []
    for path in reversed(complete):
        try:
            state = TrainerState.read(path / STATE_FILE)
            accelerator.load_state(str(path), strict=strict)
        except Exception as exc:  # torch, safetensors, pickle and JSON each raise their own types for a bad file
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            reasons.append(f"{path.name}: {reason}")
            logger.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path, reason)
            continue
        return path, state
    if reasons:
        raise CheckpointError(f"{out / CHECKPOINTS_DIR}: no readable checkpoint ({'; '.join(reasons)})")
    return None


def save_checkpoint(accelerator: Accelerator, out: Path, state: TrainerState, keep: int) -> None:
    """accelerate's full state (weights, optimizer, scheduler, RNG, accumulation step) into a hidden directory,
    then the trainer state, then one rename: a kill leaves either the whole checkpoint or none."""
    final = checkpoint_path(out, state.global_step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(partial / STATE_FILE, asdict(state))
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        complete = sorted((p.parent for p in (out / CHECKPOINTS_DIR).glob(f"step-*/{STATE_FILE}")), key=_step_of)
        for old in complete[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def save_projector(projector: Projector, adapter: nn.Module | None, out: Path, provenance: dict[str, Any]) -> Path:
    """Write ``OUT/projector/`` (a standard projector directory, plus ``adapter/`` with LoRA) beside the old one,
    then swap them."""
    target, fresh, stale = out / PROJECTOR_DIR, out / f".{PROJECTOR_DIR}.new", out / f".{PROJECTOR_DIR}.old"
    for path in (fresh, stale):
        if path.exists():
            shutil.rmtree(path)
    saved = Projector(replace(projector.config, training=provenance))
    saved.load_state_dict(projector.state_dict())
    saved.save_pretrained(fresh)
    if adapter is not None:
        adapter.save_pretrained(fresh / ADAPTER_DIR)  # type: ignore[operator]
    if target.exists():
        target.rename(stale)
    fresh.rename(target)
    if stale.exists():
        shutil.rmtree(stale)
    return target


def write_history(out: Path, history: Sequence[dict[str, Any]]) -> None:
    """``history.jsonl`` and ``curve.png`` (train and held-out loss, held-out accuracy), both replaced whole."""
    atomic_write_text(out / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in history))
    figure = agg_figure("the training curve", figsize=(10, 3.6))
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
    losses, accuracy = figure.subplots(1, 2)
    train = [(r["step"], r["train_loss"]) for r in history if "train_loss" in r]
    val = [(r["step"], r["val_loss"], r["val_accuracy"]) for r in history if "val_loss" in r]
    if train:
        losses.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        losses.plot([v[0] for v in val], [v[1] for v in val], "o-", label="held-out")
        accuracy.plot([v[0] for v in val], [v[2] for v in val], "o-", color="tab:green")
    losses.set(xlabel="optimizer step", ylabel="answer cross-entropy", yscale="log", title="loss")
    losses.legend()
    accuracy.set(xlabel="optimizer step", ylabel="accuracy", ylim=(-0.02, 1.02), title="held-out accuracy (greedy)")
    partial = out / f".{CURVE_FILE}.partial"
    figure.savefig(partial, format="png", dpi=80)
    os.replace(partial, out / CURVE_FILE)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSummary:
    """What a run produced. ``seconds`` is this invocation's wall time; ``resumed_from`` its starting step."""

    projector_dir: str
    best_val_loss: float | None
    best_step: int | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    steps: int
    seconds: float
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_cache(cache: LatentCache, items: Sequence[EncodedExample], projector: Projector) -> None:
    missing = next((i.example.id for i in items if i.example.id not in cache), None)
    if missing is not None:
        raise DataError(f"latent cache {cache.directory}: no latents for example '{missing}'; run stage 1 first")
    shape = tuple(cache.load([items[0].example.id]).shape[1:])
    expected = (projector.config.plan_length, projector.config.planner_dim)
    if shape != expected:
        raise ConfigError(
            f"latent cache {cache.directory} holds latents [L, d] = {list(shape)}, but the projector expects "
            f"plan_length {expected[0]} and planner_dim {expected[1]}"
        )


WARMUP_FRACTION = 0.1


def scaled_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run uses: as configured, unless the run is not longer than it (the paper's 300 steps would
    never finish in a short run and the learning rate would never reach its peak); then 10% of the run."""
    if warmup_steps < total_steps:
        return warmup_steps
    return max(1, round(WARMUP_FRACTION * total_steps)) if warmup_steps else 0


class ProjectorTrainer:
    """One invocation of a run: the prepared objects, the :class:`TrainerState`, and what happens at each step.
    Build it, then :meth:`run`; :func:`train_projector` does both."""

    def __init__(
        self,
        projector: Projector,
        executor: CausalExecutor,
        cache: LatentCache,
        train: Sequence[TrainingExample],
        held_out: Sequence[TrainingExample],
        out: Path,
        config: ProjectorTrainingConfig,
        templates: PromptTemplates,
        accelerator: Accelerator,
        provenance: dict[str, Any],
    ) -> None:
        if not train:
            raise DataError("no training examples")
        self.out, self.config, self.accelerator, self.provenance = out, config, accelerator, provenance
        self.executor, self.cache = executor, cache
        placement, length = projector.config.placement, projector.config.plan_length
        self.train = encode_examples(executor, train, templates, placement, length)
        self.held_out = encode_examples(executor, held_out, templates, placement, length)
        _check_cache(cache, self.train + self.held_out, projector)
        check_run(out, run_identity(projector, cache, self.train, self.held_out, config), accelerator)

        torch.manual_seed(config.seed)  # LoRA's initial weights
        freeze(executor.model)
        executor.model.to(accelerator.device)
        lora = add_lora(executor, config) if config.lora else None
        # Matrices decay; biases and norm scales (1-D) do not unless asked, as in the authors' Trainer.
        exempt = [p for p in projector.parameters() if p.dim() < 2 and not config.decay_biases_and_norms]
        decayed = [p for p in projector.parameters() if all(p is not q for q in exempt)]
        groups: list[dict[str, Any]] = [{"params": decayed, "lr": config.lr}]
        if exempt:
            groups.append({"params": exempt, "lr": config.lr, "weight_decay": 0.0})
        if lora is not None:
            groups.append({"params": [p for p in lora.parameters() if p.requires_grad], "lr": config.lora_lr})
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        self.sampler = EpochShuffle(len(self.train), config.seed)
        indices = _Indices(len(self.train))
        collate = LatentCollator(cache, [e.example.id for e in self.train])
        loader = DataLoader(indices, config.batch_size, sampler=self.sampler, collate_fn=collate)
        self.loader = accelerator.prepare(loader)
        # Micro-batches per process and epoch; the last partial accumulation of an epoch still makes a step.
        self.batches_per_epoch = len(self.loader)
        total = config.epochs * math.ceil(self.batches_per_epoch / config.grad_accum)
        self.total_steps = min(total, config.max_steps or total)
        self.warmup_steps = scaled_warmup(config.warmup_steps, self.total_steps)
        if self.warmup_steps != config.warmup_steps and accelerator.is_main_process:
            Console(stderr=True).print(
                f"warm-up: {config.warmup_steps} steps would not finish in this run of {self.total_steps} steps; "
                f"using {self.warmup_steps} ({WARMUP_FRACTION:.0%} of the run)",
                highlight=False,
            )
        scheduler = get_cosine_schedule_with_warmup(optimizer, self.warmup_steps, self.total_steps)
        if lora is None:
            self.model, self.optimizer, self.scheduler = accelerator.prepare(projector, optimizer, scheduler)
            self.executor_model, self.trainables = executor.model, [self.model]
        else:
            prepared = accelerator.prepare(projector, lora, optimizer, scheduler)
            self.model, self.executor_model, self.optimizer, self.scheduler = prepared
            self.trainables = [self.model, self.executor_model]
            # Checkpoints keep only the adapter's weights, not a copy of the frozen executor.
            accelerator.register_save_state_pre_hook(_adapter_only_hook(1))
        self.projector: Projector = accelerator.unwrap_model(self.model)
        self.adapter = None if lora is None else accelerator.unwrap_model(self.executor_model)
        self.params = [p for m in self.trainables for p in m.parameters() if p.requires_grad]
        self.state = TrainerState()
        loaded = load_latest_good_checkpoint(accelerator, out, strict=lora is None)
        self.latest = None if loaded is None else loaded[0]
        if loaded is not None:
            self.state = loaded[1]
        self.window = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, micro-batches

    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """One micro-batch: latents [B, L, d_planner] → (noise) → projector → executor loss; an optimizer step when
        the accumulation is complete. Returns the micro-batch's loss."""
        config, accelerator = self.config, self.accelerator
        with accelerator.accumulate(*self.trainables):
            items = [self.train[i] for i in batch["index"].tolist()]
            latents = batch["latents"].float()
            rank = accelerator.process_index
            generator = noise_generator(config.seed, epoch, self.state.batches_in_epoch, rank, latents.device)
            with accelerator.autocast():
                soft = self.model(add_latent_noise(latents, config.latent_noise, generator))
                loss, _ = answer_loss(self.executor_model, build_batch(self.executor, soft, items))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                if config.grad_clip is not None:
                    accelerator.clip_grad_norm_(self.params, config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def run(self, progress: bool, on_step: Callable[[int], None] | None) -> TrainingSummary:
        started, state, resumed_from = time.perf_counter(), self.state, self.state.global_step
        with progress_bar(
            progress and self.accelerator.is_main_process, "loss {task.fields[loss]}  held-out {task.fields[val]}"
        ) as bar:
            task = bar.add_task("training projector", total=self.total_steps, completed=resumed_from, loss="–", val="–")
            if self.latest is None:
                self.validate(bar, task)  # the untrained projector: the curve's first point
            for epoch in range(state.epoch, self.config.epochs):
                if state.global_step >= self.total_steps:
                    break
                self.sampler.set_epoch(epoch)
                self.loader.set_epoch(epoch)
                skip = state.batches_in_epoch
                for batch in self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader:
                    loss = self.step(batch, epoch)
                    state.batches_in_epoch += 1
                    self.window += torch.stack([loss.double(), loss.new_ones((), dtype=torch.float64)])
                    if not self.accelerator.sync_gradients:
                        continue
                    state.global_step += 1
                    if state.batches_in_epoch == self.batches_per_epoch:
                        state.epoch, state.batches_in_epoch = epoch + 1, 0
                    self.after_step(epoch, bar, task)
                    if on_step is not None:
                        on_step(state.global_step)
                    if state.global_step >= self.total_steps:
                        break
        if not self.held_out and self.accelerator.is_main_process and not (self.out / PROJECTOR_DIR).exists():
            save_projector(self.projector, self.adapter, self.out, self.provenance_record(None))
            write_history(self.out, state.history)
        self.accelerator.wait_for_everyone()
        validated = [r for r in state.history if "val_loss" in r]
        return TrainingSummary(
            projector_dir=str(self.out / PROJECTOR_DIR),
            best_val_loss=state.best_val_loss,
            best_step=state.best_step,
            final_val_loss=validated[-1]["val_loss"] if validated else None,
            final_val_accuracy=validated[-1]["val_accuracy"] if validated else None,
            steps=state.global_step,
            seconds=time.perf_counter() - started,
            resumed_from=resumed_from,
        )

    def after_step(self, epoch: int, bar: Progress, task: Any) -> None:
        """Log, validate and checkpoint on their schedules. A checkpoint flushes the loss window, so a resumed run
        logs the same means as an uninterrupted one."""
        step, config = self.state.global_step, self.config
        final = step >= self.total_steps
        evaluating = step % config.eval_every == 0 or final
        saving = step % config.save_every == 0 or final
        if step % config.log_every == 0 or evaluating or saving:
            loss_sum, count = self.accelerator.reduce(self.window.clone(), "sum").tolist()
            self.window.zero_()
            lr = self.scheduler.get_last_lr()[0]
            self.record({"step": step, "epoch": epoch, "train_loss": loss_sum / count, "lr": lr})
            bar.update(task, loss=f"{loss_sum / count:.4f}")
        if evaluating:
            self.validate(bar, task)
        if saving:
            save_checkpoint(self.accelerator, self.out, self.state, config.keep_checkpoints)
        bar.update(task, completed=step)

    def validate(self, bar: Progress, task: Any) -> None:
        """Held-out loss and accuracy; a new best projector (by loss) replaces ``OUT/projector``."""
        if not self.held_out:
            return
        state = self.state
        result = validate(self.projector, self.executor, self.cache, self.held_out, self.config, self.accelerator)
        self.record({"step": state.global_step, "val_loss": result.loss, "val_accuracy": result.accuracy})
        if state.best_val_loss is None or result.loss < state.best_val_loss:
            state.best_val_loss, state.best_step = result.loss, state.global_step
            if self.accelerator.is_main_process:
                save_projector(self.projector, self.adapter, self.out, self.provenance_record(result))
        if self.accelerator.is_main_process:
            write_history(self.out, state.history)
        self.accelerator.wait_for_everyone()
        bar.update(task, val=f"{result.loss:.4f} / {result.accuracy:.0%}")

    def record(self, entry: dict[str, Any]) -> None:
        """Add to the history, merging entries of the same step."""
        history = self.state.history
        if history and history[-1]["step"] == entry["step"]:
            history[-1].update(entry)
        else:
            history.append(entry)

    def provenance_record(self, result: Validation | None) -> dict[str, Any]:
        """The saved projector's ``training`` field."""
        scores = {} if result is None else {"val_loss": result.loss, "val_accuracy": result.accuracy}
        return {
            **self.provenance,
            "step": self.state.global_step,
            **scores,
            "config": self.config.to_dict(),
            "train_examples": len(self.train),
            "held_out_examples": len(self.held_out),
            "adapter": ADAPTER_DIR if self.adapter is not None else None,
        }


def train_projector(
    projector: Projector,
    executor: CausalExecutor,
    cache: LatentCache,
    train: Sequence[TrainingExample],
    held_out: Sequence[TrainingExample],
    out_dir: str | Path,
    config: ProjectorTrainingConfig | None = None,
    *,
    templates: PromptTemplates | None = None,
    accelerator: Accelerator | None = None,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainingSummary:
    """Train ``projector`` (and LoRA on ``executor`` if configured) on cached latents into ``out_dir``, resuming
    from its latest checkpoint. The executor is frozen and, with LoRA, wrapped in place. ``provenance`` is added to
    the saved projector's ``training`` record; ``on_step(step)`` runs after every optimizer step (tests use it to
    kill a run)."""
    config = config or ProjectorTrainingConfig()
    trainer = ProjectorTrainer(
        projector,
        executor,
        cache,
        train,
        held_out,
        Path(out_dir),
        config,
        templates or PromptTemplates(),
        accelerator or make_accelerator(config),
        provenance or {},
    )
    return trainer.run(progress, on_step)


def _adapter_only_hook(position: int) -> Callable[[list[nn.Module], list[dict[str, Any]], str], None]:
    """accelerate save-state hook: keep only the LoRA tensors of the model at ``position``."""

    def hook(models: list[nn.Module], weights: list[dict[str, Any]], output_dir: str) -> None:
        if position < len(weights):
            weights[position] = {k: v for k, v in weights[position].items() if "lora_" in k}

    return hook
