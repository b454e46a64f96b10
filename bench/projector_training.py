"""Projector training speed: steps per second from cached latents against recomputing the planner every step.

Both modes run the same training step on the same models, questions and batches: latents [B, L, d_planner] →
projector → soft tokens spliced before the executor's chat prompt → cross-entropy on the answer tokens → AdamW.
They differ only in where the latents come from: read from the stage-1 cache (``LatentCache``), or sampled afresh by
the frozen planner with the exact LLaDA sampler (gen 64, one token per step, block 32) inside every step. The
stage-1 cost of the cache (paid once per dataset, not per epoch) is reported beside them.

    python bench/projector_training.py                          # random LLaDA d 256 × 4 layers, tiny Llama executor
    python bench/projector_training.py --quick                  # a smoke run of a few seconds
    python bench/projector_training.py --planner DIR --executor DIR   # e.g. the toy world's trained models
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.models.tiny import random_llada, random_llama, tiny_llada_config, train_bpe_tokenizer
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.projector.model import Projector
from latent_darm.training.data import TrainingExample, example_id
from latent_darm.training.latent_cache import build_latent_cache
from latent_darm.training.projector_trainer import answer_loss, build_batch, encode_examples

CORPUS = [
    "Write brief hints that would help a student solve the problem below: the key facts, the reasoning steps.",
    "Tom has 5 apples and buys 7 more. He gives 4 to his sister. How many apples does he have now?",
    "A train travels 60 miles per hour for 3 hours. How far does it go? Multiply speed by time.",
    "Give only the final answer in \\boxed{}, with no explanation. The answer is 8.",
    "system user assistant Problem: What is the value of x if 3x + 7 = 22?",
] * 20


def build_models(args: argparse.Namespace) -> tuple[DiffusionLM, AutoregressiveLM]:
    """The given checkpoints, or a random LLaDA (d 256, 4 layers) and a tiny random Llama sharing one tokenizer."""
    if args.planner and args.executor:
        return DiffusionLM.from_pretrained(args.planner), AutoregressiveLM.from_pretrained(args.executor)
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=512)
    width = 64 if args.quick else 256
    config = tiny_llada_config(tokenizer, d_model=width, n_heads=4, n_kv_heads=4, n_layers=2 if args.quick else 4,
                               mlp_hidden_size=2 * width)  # fmt: skip
    planner = DiffusionLM(random_llada(config, seed=0), tokenizer, name_or_path=f"random-llada-d{width}")
    executor = AutoregressiveLM(random_llama(tokenizer, hidden_size=64, std=0.2), tokenizer, name_or_path="tiny-llama")
    return planner, executor


def questions(n: int) -> list[TrainingExample]:
    texts = [f"Tom has {a} apples and buys {a + 3} more. How many apples does he have now?" for a in range(n)]
    return [TrainingExample(example_id("bench", q), q, str(2 * a + 3), "math", "bench") for a, q in enumerate(texts)]


def timed_steps(step: Callable[[list[int]], None], batches: Sequence[list[int]], warmup: int) -> list[float]:
    """Seconds of each step after ``warmup`` untimed ones."""
    times = []
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    planner, executor = build_models(args)
    executor.model.requires_grad_(False)
    sampler = LLaDASamplerConfig(
        gen_length=args.gen_length, block_length=args.block_length, steps=args.gen_length, hidden_layer=-1
    )
    templates = PromptTemplates()
    examples = questions(args.batch_size * 4)
    encoded = encode_examples(executor, examples, templates, "prefix", args.gen_length)
    projector = Projector.for_pair(planner, executor, plan_length=args.gen_length)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=3e-4, weight_decay=1e-3)

    def train_on(latents: torch.Tensor, batch: list[int]) -> None:
        soft = projector(latents.float())
        loss, _ = answer_loss(executor.model, build_batch(executor, soft, [encoded[i] for i in batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        optimizer.step()

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        cache = build_latent_cache(planner, examples, Path(directory), sampler, templates, batch_size=args.batch_size)
        stage1 = time.perf_counter() - started

        def cached(batch: list[int]) -> None:
            train_on(cache.load([examples[i].id for i in batch]), batch)

        def recomputed(batch: list[int]) -> None:
            prompts = [templates.planner_prompt(examples[i].question) for i in batch]
            plans = planner.generate(prompts, sampler, batch_size=len(batch))
            train_on(torch.stack([p.latents for p in plans if p.latents is not None]), batch)

        generator = torch.Generator().manual_seed(0)

        def batches(n: int) -> list[list[int]]:
            return [torch.randperm(len(examples), generator=generator)[: args.batch_size].tolist() for _ in range(n)]

        cached_times = timed_steps(cached, batches(args.cached_steps + 2), warmup=2)
        recomputed_times = timed_steps(recomputed, batches(args.recompute_steps + 1), warmup=1)
    cached_rate = 1 / statistics.mean(cached_times)
    recomputed_rate = 1 / statistics.mean(recomputed_times)
    return {
        "planner": planner.name_or_path,
        "planner_d": planner.hidden_size,
        "planner_layers": planner.model.config.n_layers,
        "executor": executor.name_or_path,
        "executor_d": executor.hidden_size,
        "batch_size": args.batch_size,
        "gen_length": args.gen_length,
        "block_length": args.block_length,
        "cached_steps_per_s": cached_rate,
        "recomputed_steps_per_s": recomputed_rate,
        "speedup": cached_rate / recomputed_rate,
        "cached_steps": len(cached_times),
        "recomputed_steps": len(recomputed_times),
        "stage1_seconds_per_example": stage1 / len(examples),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }


def report(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"projector training, batch {result['batch_size']}, plan {result['gen_length']}")
    for column in ("latents from", "steps/s", "s/step"):
        table.add_column(column, justify="right" if column != "latents from" else "left")
    for label, key in (("stage-1 cache", "cached_steps_per_s"), ("planner every step", "recomputed_steps_per_s")):
        table.add_row(label, f"{result[key]:.2f}", f"{1 / result[key]:.3f}")
    console.print(table)
    console.print(
        f"cached latents are {result['speedup']:.0f}× faster per step; stage 1 costs "
        f"{result['stage1_seconds_per_example']:.3f} s per example, once"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planner", default=None, help="LLaDA-layout checkpoint (with --executor)")
    parser.add_argument("--executor", default=None, help="causal LM checkpoint (with --planner)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--cached-steps", type=int, default=40)
    parser.add_argument("--recompute-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny planner, few steps: a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.cached_steps, args.recompute_steps = 5, 2
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    report(result, Console())
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
