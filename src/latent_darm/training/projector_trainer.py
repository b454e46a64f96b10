"""Stage 2 of projector training: fit the projector on cached plan latents while both language models stay frozen.

This module is the loop; its parts live beside it: :mod:`~latent_darm.training.projector_config` (settings),
:mod:`~latent_darm.training.projector_step` (batching, labels, loss, validation),
:mod:`~latent_darm.training.projector_data` (data order, cached latents, noise) and
:mod:`~latent_darm.training.projector_run` (the run directory: identity, checkpoints, best projector, history).
Their public names are importable from here too.

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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from latent_darm.errors import DataError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.pipelines.factory import ADAPTER_DIR
from latent_darm.pipelines.latent import add_latent_noise
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.progress import progress_bar
from latent_darm.projector.model import Projector
from latent_darm.training.data import TrainingExample
from latent_darm.training.latent_cache import LatentCache
from latent_darm.training.projector_config import (
    COSMETIC,
    MIXED_PRECISION,
    WARMUP_FRACTION,
    ProjectorTrainingConfig,
    make_accelerator,
    scaled_warmup,
)
from latent_darm.training.projector_data import (
    EpochShuffle,
    LatentCollator,
    _Indices,
    check_cache,
    noise_generator,
)
from latent_darm.training.projector_run import (
    CHECKPOINTS_DIR,
    CURVE_FILE,
    HISTORY_FILE,
    PROJECTOR_DIR,
    RUN_FILE,
    STATE_FILE,
    TrainerState,
    _adapter_only_hook,
    check_run,
    check_settings,
    checkpoint_path,
    load_latest_good_checkpoint,
    run_identity,
    run_identity_settings,
    save_checkpoint,
    save_projector,
    write_history,
)
from latent_darm.training.projector_step import (
    IGNORE_INDEX,
    EncodedExample,
    TrainingBatch,
    Validation,
    add_lora,
    answer_loss,
    build_batch,
    encode_examples,
    freeze,
    lora_config,
    right_pad,
    validate,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "COSMETIC",
    "CURVE_FILE",
    "HISTORY_FILE",
    "IGNORE_INDEX",
    "MIXED_PRECISION",
    "PROJECTOR_DIR",
    "RUN_FILE",
    "STATE_FILE",
    "WARMUP_FRACTION",
    "EncodedExample",
    "EpochShuffle",
    "LatentCollator",
    "ProjectorTrainer",
    "ProjectorTrainingConfig",
    "TrainerState",
    "TrainingBatch",
    "TrainingSummary",
    "Validation",
    "add_lora",
    "answer_loss",
    "build_batch",
    "check_cache",
    "check_run",
    "check_settings",
    "checkpoint_path",
    "encode_examples",
    "freeze",
    "load_latest_good_checkpoint",
    "lora_config",
    "make_accelerator",
    "noise_generator",
    "right_pad",
    "run_identity",
    "run_identity_settings",
    "save_checkpoint",
    "save_projector",
    "scaled_warmup",
    "train_projector",
    "validate",
    "write_history",
]


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


class ProjectorTrainer:
    """One invocation of a run: the prepared objects, the :class:`TrainerState`, and what happens at each step.
    Build it, then :meth:`run`; :func:`train_projector` does both."""

    def __init__(
        self,
        projector: Projector,
        executor: AutoregressiveLM,
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
        check_cache(cache, self.train + self.held_out, projector)
        identity = run_identity(projector, cache, self.train, self.held_out, config, executor.name_or_path)
        if (init := provenance.get("init", "random")) != "random":
            identity["init"] = init  # a seeded start is other weights: no resume across inits (random stays implicit)
        check_run(out, identity, accelerator)

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
    executor: AutoregressiveLM,
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
