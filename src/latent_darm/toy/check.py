"""Measure a built toy world on its test split: does the planner plan, does the executor need the plan?

Per level: the planner's plan exactness (exact sampler, temperature 0) and the executor's accuracy answering
directly, with chain of thought, with the gold plan and with the planner's plan — plus the role swaps that the
paper's other pairings need (the executor writing plans, the planner executing a plan). A development tool, not
the evaluation suite: ``darm demo`` reports the real tables.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from latent_darm.grading import grade
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.sampling import SamplerConfig
from latent_darm.toy.build import WorldArtifacts
from latent_darm.toy.mixtures import chat_text
from latent_darm.toy.world import ToyProblem


@torch.no_grad()
def greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 64,
) -> list[str]:
    """Greedy replies of a causal LM to user prompts (chat template, left padding), without special tokens."""
    tokenizer.padding_side = "left"
    replies = []
    for start in range(0, len(prompts), batch_size):
        texts = [chat_text(tokenizer, p) for p in prompts[start : start + batch_size]]
        batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        replies += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [r.strip() for r in replies]


def diffuse(planner: DiffusionLM, prompts: Sequence[str], sampler: SamplerConfig) -> list[str]:
    return [p.text for p in planner.generate(list(prompts), sampler, batch_size=64)]


def step_budgets(plan_length: int) -> list[int]:
    """The demo's planner budgets: one token per step, then a half and a quarter of the steps (the world's own
    difficulty: dependent plan tokens committed together)."""
    return sorted({plan_length, max(1, plan_length // 2), max(1, plan_length // 4)}, reverse=True)


def by_level(problems: Sequence[ToyProblem], hits: Sequence[bool]) -> dict[int, float]:
    totals: dict[int, list[bool]] = defaultdict(list)
    for problem, hit in zip(problems, hits, strict=True):
        totals[problem.level].append(hit)
    return {level: sum(v) / len(v) for level, v in sorted(totals.items())}


def check_world(artifacts: WorldArtifacts, out: Callable[[str], None] = print) -> dict[str, dict[int, float]]:
    """Print (and return) accuracy per configuration and level, with the seconds each configuration took."""
    templates = PromptTemplates()
    test = artifacts.problems("test")
    planner = artifacts.load_planner()
    executor, tokenizer = artifacts.load_executor()
    questions = [p.question for p in test]
    answers = [str(p.answer) for p in test]
    rows: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}

    def record(name: str, hits: list[bool], started: float) -> None:
        rows[name], seconds[name] = by_level(test, hits), time.perf_counter() - started
        print(f"  {name}: {seconds[name]:.1f}s", file=sys.stderr)

    def graded(replies: list[str]) -> list[bool]:
        return [grade(r, a, "integer").correct for r, a in zip(replies, answers, strict=True)]

    plans: list[str] = []
    for steps in step_budgets(artifacts.config.plan_length):  # the full budget first: its plans are used below
        started = time.perf_counter()
        sampler = replace(artifacts.plan_sampler(), steps=steps)
        sampled = diffuse(planner, [templates.planner_prompt(q) for q in questions], sampler)
        plans = plans or sampled
        record(f"planner plan exact, {steps} steps", [p == t.plan for p, t in zip(sampled, test, strict=True)], started)
        started = time.perf_counter()
        prompts = [templates.text_executor_prompt(t.question, p, "integer") for t, p in zip(test, sampled, strict=True)]
        record(f"executor + planner plan, {steps} steps", graded(greedy(executor, tokenizer, prompts, 16)), started)
    started = time.perf_counter()
    arm_plans = greedy(
        executor, tokenizer, [templates.planner_prompt(q) for q in questions], artifacts.config.plan_length
    )
    record("executor-as-planner plan exact", [p == t.plan for p, t in zip(arm_plans, test, strict=True)], started)
    direct = [templates.direct_prompt(q, "integer") for q in questions]
    cot = [templates.direct_prompt(q, "integer", chain_of_thought=True) for q in questions]
    gold = [templates.text_executor_prompt(t.question, t.plan, "integer") for t in test]
    planned = [templates.text_executor_prompt(t.question, p, "integer") for t, p in zip(test, plans, strict=True)]
    for name, prompts, max_new in (
        ("executor direct", direct, 8),
        ("executor CoT", cot, 64),
        ("executor + gold plan", gold, 16),
    ):
        started = time.perf_counter()
        record(name, graded(greedy(executor, tokenizer, prompts, max_new)), started)
    for name, prompts in (
        ("planner direct", direct),
        ("planner + gold plan", gold),
        ("planner + planner plan", planned),
    ):
        started = time.perf_counter()
        record(name, graded(diffuse(planner, prompts, artifacts.answer_sampler())), started)

    levels = sorted({p.level for p in test})
    out(f"| configuration | {' | '.join(f'L{k}' for k in levels)} | all | seconds |")
    out(f"|---|{'---|' * len(levels)}---|---|")
    for name, accuracy in rows.items():
        overall = sum(accuracy.values()) / len(accuracy)  # levels have equal test counts
        cells = " | ".join(f"{accuracy[k]:.2f}" for k in levels)
        out(f"| {name} | {cells} | {overall:.3f} | {seconds[name]:.1f} |")
    for problem, plan in list(zip(test, plans, strict=True))[:: max(1, len(test) // 5)]:
        out(f"L{problem.level}: {problem.question}\n   gold: {problem.plan}\n   plan: {plan}")
    return rows
