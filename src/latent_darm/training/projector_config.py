"""Stage-2 settings of projector training and the Accelerator they imply."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import Accelerator

from latent_darm.errors import ConfigError

MIXED_PRECISION = ("auto", "no", "bf16")
# Settings that change neither the weights nor the data order: a rerun may change them.
COSMETIC = frozenset({"eval_batch_size", "log_every", "keep_checkpoints"})


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
        for name in ("lr", "lora_lr", "weight_decay", "latent_noise", "lora_dropout", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):  # nan passes every comparison below
                raise ConfigError(f"{name} must be a finite number, got {value}")
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


WARMUP_FRACTION = 0.1


def scaled_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run uses: as configured, unless the run is not longer than it (the paper's 300 steps would
    never finish in a short run and the learning rate would never reach its peak); then 10% of the run."""
    if warmup_steps < total_steps:
        return warmup_steps
    return max(1, round(WARMUP_FRACTION * total_steps)) if warmup_steps else 0
