"""A projector-training run directory: its identity (a rerun must match it), the trainer state and the
checkpoints it resumes from, the best projector, the history and the training curve. Every file is written whole
(atomically, or into a hidden directory renamed at the end), so a kill never leaves a half-written one.

Layout: ``run.json`` (identity), ``checkpoints/step-N/`` (accelerate state + ``trainer_state.json``),
``projector/`` (the best projector by held-out loss, ``adapter/`` inside with LoRA), ``history.jsonl``,
``curve.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from latent_darm.config_diff import first_difference, short
from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.figures import agg_figure
from latent_darm.io import atomic_write_json, atomic_write_text, writing
from latent_darm.pipelines.factory import ADAPTER_DIR
from latent_darm.projector.model import Projector
from latent_darm.training.latent_cache import LatentCache, spec_planner_weights, weights_id
from latent_darm.training.projector_config import COSMETIC, ProjectorTrainingConfig
from latent_darm.training.projector_step import EncodedExample

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
STATE_FILE = "trainer_state.json"
HISTORY_FILE = "history.jsonl"
CURVE_FILE = "curve.png"
PROJECTOR_DIR = "projector"
CHECKPOINTS_DIR = "checkpoints"


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
    executor: str = "",
) -> dict[str, Any]:
    """Everything that decides the trained weights; a rerun in the same directory must match it. ``executor``:
    the executor's reference, whose weights' fingerprint is recorded (the planner's is in the latents' spec)."""
    spec = json.dumps(cache.spec, sort_keys=True)
    identity_free = ("training", "planner_sampler", "planner", "executor")  # projector fields not part of it
    return {
        "training": run_identity_settings(config),
        "weights": {"planner": spec_planner_weights(cache.spec), "executor": weights_id(executor)},
        # The sampler settings are part of the latents' identity already (an earlier run did not record them here);
        # the models are named by their weights (below), not by their paths, so a moved run still resumes.
        "projector": {k: v for k, v in projector.config.to_dict().items() if k not in identity_free},
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


def check_settings(out: str | Path, config: ProjectorTrainingConfig, weights: dict[str, str] | None = None) -> None:
    """The training settings part of :func:`check_run` (and, given ``weights``, the models' fingerprints:
    {"planner": …, "executor": …} from :func:`weights_id`), for a check before any model is loaded."""
    identity: dict[str, Any] = {"training": run_identity_settings(config)}
    if weights is not None:
        identity["weights"] = weights
    _refuse_other(Path(out), identity, partial=True)


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
    with writing(final, "the checkpoints before it are kept"):  # torch's and safetensors' own write errors
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
    with writing(target, "the previous best projector is kept"):
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


def _adapter_only_hook(position: int) -> Callable[[list[nn.Module], list[dict[str, Any]], str], None]:
    """accelerate save-state hook: keep only the LoRA tensors of the model at ``position``."""

    def hook(models: list[nn.Module], weights: list[dict[str, Any]], output_dir: str) -> None:
        if position < len(weights):
            weights[position] = {k: v for k, v in weights[position].items() if "lora_" in k}

    return hook
