"""Train one variant: a LLaDA network (this package's architecture and checkpoint format) under the variant's
objective, resumable, with optional EMA; the result is an ordinary LLaDA checkpoint directory plus the tokenizer.

Every variant of a run gets the same data, steps, batch size, optimizer and schedule (AdamW, no weight decay,
clip 1.0, transformers' linear warm-up then cosine decay to 10%). Batches are drawn by a generator seeded from
(seed, step), so a run resumed from its last checkpoint draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from latent_darm.errors import ConfigError
from latent_darm.io import atomic_write_json, notice, read_json_file
from latent_darm.latent_tokens.curves import HELDOUT_ROWS, heldout_every, heldout_loss
from latent_darm.latent_tokens.objectives import batch_loss
from latent_darm.latent_tokens.state import clear_states, save_state, saved_states
from latent_darm.latent_tokens.tokenizer import VOCABULARY, puzzle_tokenizer
from latent_darm.latent_tokens.variants import get_variant
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.llada.configuration import LLaDAConfig
from latent_darm.models.llada.modeling import LLaDAModelLM
from latent_darm.toy.models import init_weights

MODEL_DIR = "model"
HISTORY_FILE = "history.json"
TRAIN_VERSION = 3  # bump when the objectives or the recipe change meaning (3: EMA warm-up)


@dataclass(frozen=True)
class TrainSettings:
    """Model shape and recipe, shared by every variant of a run."""

    layers: int = 4
    d_model: int = 128
    heads: int = 4
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    ema: float | None = None
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    mtp_window: int | None = None  # ar-mtp's training window; None = uniform in 1..rest per row
    absolute_positions: bool = True  # a learned position embedding beside RoPE, as the authors' models
    no_special_logits: bool = True  # [MASK], [PAD] and the padded vocabulary rows get −inf in the training softmax
    noise_puzzle: bool = False  # diffusion: noise and predict the puzzle cells too (the authors' SCDM sweep, -tat)

    def fingerprint(self) -> str:
        payload = {**asdict(self), "version": TRAIN_VERSION}
        payload.pop("checkpoint_every")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps: {self.steps} must be ≥ 1 (training steps per variant)")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ConfigError(f"--ema: {self.ema} must be in [0, 1) (or 'off')")


def ema_decay(target: float | None, step: int) -> float:
    """The EMA decay at optimizer step ``step`` (0-based): ``min(target, (1 + step) / (10 + step))``, the usual
    warm-up, so a short run's average is not dominated by the random initial weights (0.999 over 2,400 steps
    would still keep 9% of them)."""
    assert target is not None
    return min(target, (1 + step) / (10 + step))


def new_model(settings: TrainSettings, max_length: int) -> LLaDAModelLM:
    ids = {t: VOCABULARY.index(t) for t in ("[MASK]", "[EOS]", "[PAD]")}
    config = LLaDAConfig(
        d_model=settings.d_model,
        n_heads=settings.heads,
        n_layers=settings.layers,
        mlp_hidden_size=4 * settings.d_model,
        vocab_size=len(VOCABULARY),
        embedding_size=32 * math.ceil(len(VOCABULARY) / 32),
        max_sequence_length=max_length,
        mask_token_id=ids["[MASK]"],
        eos_token_id=ids["[EOS]"],
        pad_token_id=ids["[PAD]"],
        absolute_position_embedding=settings.absolute_positions,
    )
    torch.manual_seed(settings.seed)
    model = LLaDAModelLM(config)
    init_weights(model, settings.layers)
    return model


@dataclass
class _Run:
    """What a resumed run must get back bit for bit: weights, optimizer moments, schedule, EMA and RNG."""

    model: LLaDAModelLM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: list[torch.Tensor] | None

    @classmethod
    def fresh(cls, settings: TrainSettings, max_length: int, device: str) -> _Run:
        model = new_model(settings, max_length).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0, betas=(0.9, 0.98))
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, settings.warmup_steps, settings.steps, min_lr_rate=0.1
        )
        ema = [p.detach().clone() for p in model.parameters()] if settings.ema is not None else None
        return cls(model, optimizer, scheduler, ema)

    def capture(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors for safetensors and plain values for JSON (no pickle anywhere)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            tensors.update({f"optimizer.{index}.{name}": value for name, value in slots.items()})
        for index, shadow in enumerate(self.ema or []):
            tensors[f"ema.{index}"] = shadow
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        values = {
            "optimizer_groups": optim["param_groups"],
            "optimizer_slots": {str(i): sorted(slots) for i, slots in optim["state"].items()},
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema is not None,
        }
        return tensors, values

    def restore(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Load a captured state; KeyError/RuntimeError/TypeError/ValueError when it does not fit this run."""
        device = next(self.model.parameters()).device
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(weights, strict=True)
        if bool(values["ema"]) != (self.ema is not None):
            raise ValueError("EMA on/off differs")
        slots = {
            int(i): {name: tensors[f"optimizer.{i}.{name}"].to(device) for name in names}
            for i, names in values["optimizer_slots"].items()
        }
        self.optimizer.load_state_dict({"state": slots, "param_groups": values["optimizer_groups"]})
        self.scheduler.load_state_dict(values["scheduler"])
        for index, shadow in enumerate(self.ema or []):
            shadow.copy_(tensors[f"ema.{index}"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])


def is_trained(directory: Path) -> bool:
    return (directory / HISTORY_FILE).exists()


def final_loss(directory: Path) -> float | None:
    """The mean training loss of a finished model's last 50 steps (None when its history lacks it)."""
    history = read_json_file(directory / HISTORY_FILE)
    value = history.get("final_loss") if isinstance(history, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def train_variant(
    variant: str,
    rows: torch.Tensor,
    prompt_length: int,
    settings: TrainSettings,
    directory: Path,
    *,
    device: str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] = notice,
    heldout: torch.Tensor | None = None,
) -> LLaDAModelLM:
    """Train (or resume, or load when finished) ``variant`` on ``rows`` [N, T]; returns the model in eval mode.
    With ``heldout`` rows the history also records the held-out loss of the evaluated weights
    (:mod:`.curves`; the training itself is the same bit for bit)."""
    spec = get_variant(variant)  # its objective and pattern
    if is_trained(directory):
        return load_llada(directory / MODEL_DIR, device=device)
    directory.mkdir(parents=True, exist_ok=True)
    run = _Run.fresh(settings, rows.shape[1], device)
    step, losses, seconds, held = 0, [], 0.0, []
    for tensors, values in saved_states(directory, log):
        try:
            run.restore(tensors, values)
            step, losses, seconds = int(values["step"]), [float(x) for x in values["losses"]], float(values["seconds"])
            held = [[int(s), float(v)] for s, v in values.get("heldout_loss", [])]
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            log(
                f"ignoring the training state of step {values.get('step')} in {directory}: it does not fit this"
                f" run ({reason}); falling back to an earlier state"
            )
            run = _Run.fresh(settings, rows.shape[1], device)
            continue
        if on_step is not None:
            on_step(step)
        break
    model, optimizer, scheduler, ema = run.model, run.optimizer, run.scheduler, run.ema
    mask_id = model.config.mask_token_id
    model.train()
    started = time.perf_counter() - seconds
    heldout = None if heldout is None else heldout[:HELDOUT_ROWS]
    every = heldout_every(settings.steps)

    def score() -> float:
        assert heldout is not None
        return heldout_loss(
            model, variant, heldout, prompt_length, batch_size=settings.batch_size, window=settings.mtp_window,
            noise_puzzle=settings.noise_puzzle, no_special_logits=settings.no_special_logits, shadow=ema,
            autocast_dtype=autocast_dtype,
        )  # fmt: skip

    while step < settings.steps:
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        index = torch.randint(rows.shape[0], (settings.batch_size,), generator=generator)
        batch = spec.batch(
            rows[index], prompt_length, mask_id, generator, settings.mtp_window,
            noise_puzzle=settings.noise_puzzle, pad_id=model.config.pad_token_id,
        )  # fmt: skip
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):  # fmt: skip
            loss = batch_loss(model, batch, no_special_logits=settings.no_special_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            decay = ema_decay(settings.ema, step)
            with torch.no_grad():
                for shadow, param in zip(ema, model.parameters(), strict=True):
                    shadow.lerp_(param.detach(), 1 - decay)
        losses.append(float(loss.detach()))
        step += 1
        if heldout is not None and (step % every == 0 or step == settings.steps):
            held.append([step, score()])
        if on_step is not None:
            on_step(1)
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            tensors, values = run.capture()
            values.update(losses=losses, seconds=time.perf_counter() - started, heldout_loss=held)
            save_state(directory, step, tensors, values)
    if ema is not None:
        with torch.no_grad():
            for shadow, param in zip(ema, model.parameters(), strict=True):
                param.copy_(shadow)
    model.eval()
    save_llada(model, directory / MODEL_DIR)
    puzzle_tokenizer().save_pretrained(directory / MODEL_DIR)
    history = {
        "variant": variant,
        "settings": asdict(settings),
        "seconds": time.perf_counter() - started,
        "loss_every_50": [sum(losses[i : i + 50]) / len(losses[i : i + 50]) for i in range(0, len(losses), 50)],
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "heldout_loss": held,
    }
    atomic_write_json(directory / HISTORY_FILE, history)
    clear_states(directory)
    return model
