"""Training mixtures for the toy planner and executor, written with the project's own prompt templates.

Every example is one user turn in the chat template (with the assistant header) and the assistant's reply, so the
models learn exactly the prompts the pipelines will send. Tasks:

* ``plan``    — planner prompt → the gold plan (the planner's job; also taught to the executor for ARM→* pairings);
* ``execute`` — text-executor prompt with the gold plan → the step the plan left out, then the box
  (``Last step: 8 -> 1. \\boxed{1}``, 7 tokens; also taught to the planner, for DDLM executors). A bare
  ``\\boxed{1}`` would need the executor to fetch the plan's last node and look up its arrow inside one forward
  pass — a two-stage circuit the tiny executor had not learned after 1500 steps (about 0.3–0.5 accuracy); written
  out, each token is one fetch or one lookup and the executor is exact within 600 steps;
* ``direct``  — direct prompt → ``\\boxed{answer}``;
* ``cot``     — chain-of-thought prompt → the whole path, then ``\\boxed{answer}``;
* ``latent``  — (the plan-prefix executor only) the planner's plan canvas as token ids *before* the
  chat-templated latent-executor prompt, exactly where the latent pipeline puts the projected latents, → the step
  the plan left out, then the box. That executor thereby knows how to read a plan placed as a prefix, and its
  projector only has to map planner latents onto plan-token embeddings. Not the paper's setting: the default
  executor is a generic instruct model (``plan``, ``execute``, ``direct``, ``cot``) that never sees anything at the
  latent positions; its projector (alone, or with LoRA on the executor) has to teach it to read them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import fields, replace

from transformers import PreTrainedTokenizerBase

from latent_darm.errors import ConfigError
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.toy.world import Mixture, ToyProblem
from latent_darm.training.sft import SFTExample

TASKS = tuple(f.name for f in fields(Mixture))
LONG_TASKS = ("plan", "cot")  # replies padded to plan_length on the diffusion canvas; the rest to answer_length


def boxed(answer: int) -> str:
    return f"\\boxed{{{answer}}}"


def prompt_and_reply(problem: ToyProblem, task: str, templates: PromptTemplates) -> tuple[str, str]:
    """The user-turn text and the gold reply of ``problem`` for ``task``."""
    q, answer = problem.question, boxed(problem.answer)
    if task == "plan":
        return templates.planner_prompt(q), problem.plan
    if task == "execute":
        return templates.text_executor_prompt(q, problem.plan, "integer"), problem.last_step
    if task == "direct":
        return templates.direct_prompt(q, "integer"), answer
    if task == "cot":
        return templates.direct_prompt(q, "integer", chain_of_thought=True), problem.chain_of_thought
    if task == "latent":
        return templates.latent_executor_prompt(q, "integer"), problem.last_step
    raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: str, system: bool = False) -> str:
    """One user turn in the chat template plus the assistant header; ``system`` adds an empty system turn first
    (how Llama-3 executors are usually prompted, to skip the default dated system header)."""
    messages = [{"role": "system", "content": ""}] if system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str, str]],
    lengths: Sequence[int | None] | None = None,
) -> list[SFTExample]:
    """(task, chat-formatted prompt, reply) → examples; the reply gets ``<|eot_id|>`` and then EOS up to its
    length (the diffusion canvas) when one is given. Tokenizes in two batch calls (fast)."""
    if not pairs:
        return []
    eot, eos = tokenizer.convert_tokens_to_ids("<|eot_id|>"), tokenizer.eos_token_id
    prompts = tokenizer([p for _, p, _ in pairs], add_special_tokens=False)["input_ids"]
    replies = tokenizer([r for _, _, r in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for i, (task, _, _) in enumerate(pairs):
        reply = [*replies[i], eot]
        length = None if lengths is None else lengths[i]
        if length is not None:
            if len(reply) > length:
                raise ConfigError(f"a {task} reply of {len(reply)} tokens does not fit a canvas of {length}")
            reply += [eos] * (length - len(reply))
        examples.append(SFTExample(tuple(prompts[i]), tuple(reply), task))
    return examples


def draw_tasks(mixture: Mixture, rng: random.Random) -> list[str]:
    """Tasks for one problem: ⌊w⌋ copies of each, plus one more with probability w − ⌊w⌋."""
    tasks = []
    for task in TASKS:
        weight = getattr(mixture, task)
        tasks += [task] * (int(weight) + (rng.random() < weight - int(weight)))
    return tasks


def planner_examples(
    problems: Sequence[ToyProblem],
    tokenizer: PreTrainedTokenizerBase,
    mixture: Mixture,
    *,
    plan_length: int,
    answer_length: int,
    seed: int = 0,
    templates: PromptTemplates | None = None,
) -> list[SFTExample]:
    """Diffusion SFT examples: replies padded with EOS to ``plan_length`` (plans, chains of thought) or
    ``answer_length`` (short answers) — the ``gen_length`` each is sampled with."""
    templates = templates or PromptTemplates()
    rng = random.Random(f"planner:{seed}")
    pairs, lengths = [], []
    for problem in problems:
        for task in draw_tasks(mixture, rng):
            prompt, reply = prompt_and_reply(problem, task, templates)
            pairs.append((task, chat_text(tokenizer, prompt), reply))
            lengths.append(plan_length if task in LONG_TASKS else answer_length)
    return encode_pairs(tokenizer, pairs, lengths)


def plan_canvases(tokenizer: PreTrainedTokenizerBase, plans: Sequence[str], plan_length: int) -> list[list[int]]:
    """The ids a planner trained on this world writes for each plan: the plan, end of turn, EOS up to
    ``plan_length`` (the positions whose latents the latent pipeline projects). One batched tokenizer call."""
    examples = encode_pairs(tokenizer, [("plan", "", plan) for plan in plans], [plan_length] * len(plans))
    return [list(e.response_ids) for e in examples]


def executor_examples(
    problems: Sequence[ToyProblem],
    tokenizer: PreTrainedTokenizerBase,
    mixture: Mixture,
    *,
    plan_length: int | None = None,
    seed: int = 0,
    system_share: float = 0.5,
    templates: PromptTemplates | None = None,
) -> list[SFTExample]:
    """Causal SFT examples; a ``system_share`` of prompts carry an empty system turn, so the executor answers the
    same with or without one. The ``latent`` task needs ``plan_length`` (the planner's canvas)."""
    if mixture.latent and plan_length is None:
        raise ConfigError("the executor's 'latent' task needs plan_length")
    templates = templates or PromptTemplates()
    rng = random.Random(f"executor:{seed}")
    pairs, plans = [], []
    for problem in problems:
        for task in draw_tasks(mixture, rng):
            prompt, reply = prompt_and_reply(problem, task, templates)
            pairs.append((task, chat_text(tokenizer, prompt, system=rng.random() < system_share), reply))
            if task == "latent":
                plans.append((len(pairs) - 1, problem.plan))
    examples = encode_pairs(tokenizer, pairs)
    # Each latent example's prompt starts with its plan canvas.
    canvases = plan_canvases(tokenizer, [plan for _, plan in plans], plan_length)
    for (index, _), canvas in zip(plans, canvases, strict=True):
        examples[index] = replace(examples[index], prompt_ids=(*canvas, *examples[index].prompt_ids))
    return examples
