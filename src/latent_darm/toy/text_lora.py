""" "text + LoRA": the executor adapted to the planner's *text* plans with the same LoRA recipe "latent + LoRA" gets.

Latent + LoRA trains a LoRA on the executor (with the projector) on the planner's latents; comparing it with plain
text would give latent an adaptation text lacks. Here the same LoRA (rank, alpha, dropout, every linear layer, the
adapter's learning rate, warm-up, batch size and number of optimizer steps) is trained on the same questions under
the same planner settings (each question under one setting in turn, as the mixture recipe draws them), with the
planner's decoded plan from the same latent caches in the text-executor prompt and the same target (the executor's
``Last step: … \\boxed{n}`` reply). The adapter is merged and saved as an ordinary executor directory in the world's
cache entry, so the text pipeline reads it like any checkpoint. The optimisation loop is the world's SFT loop
(AdamW, warm-up then cosine), not the projector trainer's; both are AdamW with warm-up and cosine decay.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock

from latent_darm.extras import require
from latent_darm.models.diffusion_lm import load_tokenizer
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.threads import single_thread
from latent_darm.toy.build import HISTORY_FILE, WorldArtifacts, _load_executor
from latent_darm.toy.mixtures import chat_text, encode_pairs
from latent_darm.toy.projectors import PlanSetting, latent_cache, projector_problems
from latent_darm.training.causal_sft import train_causal_sft
from latent_darm.training.projector_config import ProjectorTrainingConfig
from latent_darm.training.projector_step import lora_config
from latent_darm.training.sft import SFTConfig

TEXT_LORA_EXECUTOR = "executor-text-lora"


def lora_steps(config: ProjectorTrainingConfig, questions: int) -> int:
    """Optimizer steps of the projector trainer's run on ``questions`` examples (one process, no accumulation)."""
    steps = config.epochs * math.ceil(questions / (config.batch_size * config.grad_accum))
    return steps if config.max_steps is None else min(steps, config.max_steps)


def train_text_lora(
    artifacts: WorldArtifacts,
    settings: Sequence[PlanSetting],
    config: ProjectorTrainingConfig,
    *,
    questions: int,
    batch_size: int,
    key: str,
    progress: bool = True,
) -> Path:
    """Train (or reuse) the text-LoRA executor for ``settings``; returns its directory (``executor-text-lora-<key>``
    in the world's entry, written atomically, one process at a time)."""
    final = artifacts.directory / f"{TEXT_LORA_EXECUTOR}-{key}"
    if (final / HISTORY_FILE).exists():
        return final
    with FileLock(final.parent / f".{final.name}.lock"):
        if (final / HISTORY_FILE).exists():
            return final
        staging = final.parent / f".{final.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with single_thread():
            _train_into(artifacts, settings, config, questions, batch_size, staging, progress)
        staging.rename(final)
    return final


def _train_into(
    artifacts: WorldArtifacts,
    settings: Sequence[PlanSetting],
    config: ProjectorTrainingConfig,
    questions: int,
    batch_size: int,
    directory: Path,
    progress: bool,
) -> None:
    peft = require("peft", "the demo's text + LoRA row")
    train_problems, held_problems = projector_problems(artifacts, questions)
    planner = artifacts.load_planner()
    caches = [
        latent_cache(artifacts, planner, s, [*train_problems, *held_problems], batch_size=batch_size,
                     progress=progress)
        for s in settings
    ]  # fmt: skip
    tokenizer = load_tokenizer(artifacts.executor_dir)
    templates = PromptTemplates()
    pairs = []
    for i, problem in enumerate(train_problems):  # each question under one setting in turn, as the mixture recipe
        plan = caches[i % len(caches)].index[problem.id].plan
        prompt = templates.text_executor_prompt(problem.question, plan, "integer")
        pairs.append(("text-lora", chat_text(tokenizer, prompt, system=True), problem.last_step))
    examples = encode_pairs(tokenizer, pairs)
    executor = _load_executor(artifacts.executor_dir)
    # LoRA's initial weights and its dropout draw from torch's global generator: seeded here, so the adapter does not
    # depend on what the process ran before (a resumed demo, or a worker process, trains the same one).
    torch.manual_seed(config.seed)
    model = peft.get_peft_model(executor, lora_config(config))
    sft = SFTConfig(
        steps=lora_steps(config, len(examples)),
        batch_size=config.batch_size,
        lr=config.lora_lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        seed=config.seed,
    )
    history = train_causal_sft(
        model, examples, sft, pad_token_id=executor.config.pad_token_id, progress=progress, description="text LoRA"
    )
    merged = model.merge_and_unload()
    merged.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    record = {"lora": {k: getattr(config, k) for k in ("lora_r", "lora_alpha", "lora_dropout")}, "sft": asdict(sft)}
    (directory / HISTORY_FILE).write_text(json.dumps({**record, **history.to_dict()}) + "\n")


def text_lora_key(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
