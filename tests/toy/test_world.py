"""The toy world: seeded disjoint splits, levels that count arrows to follow, gold plans that stop one step short
and check out, and a tokenizer that covers every real prompt."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from transformers import AutoTokenizer

from latent_darm.errors import ConfigError, DataError
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.toy.mixtures import (
    TASKS,
    chat_text,
    executor_examples,
    plan_canvases,
    planner_examples,
    prompt_and_reply,
)
from latent_darm.toy.tokenizer import template_phrases, toy_tokenizer
from latent_darm.toy.world import (
    SPLITS,
    Mixture,
    WorldConfig,
    execute_plan,
    generate_split,
    generate_world,
    make_problem,
    parse_question,
    quick_config,
    solve_question,
)

LEVELS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def world():
    return {split: generate_split(split, 30, LEVELS, seed=7) for split in SPLITS}


@pytest.fixture(scope="module")
def toy_tok(world):
    return toy_tokenizer(world["test"], nodes=10)


def test_splits_are_disjoint_sized_and_unique(world):
    questions = {split: [p.question for p in problems] for split, problems in world.items()}
    for split, qs in questions.items():
        assert len(qs) == len(set(qs)) == 30 * len(LEVELS), split
    assert not set(questions["train"]) & set(questions["test"])
    assert not set(questions["train"]) & set(questions["validation"])
    assert not set(questions["validation"]) & set(questions["test"])
    assert len({p.id for problems in world.values() for p in problems}) == 3 * 30 * len(LEVELS)


def test_same_seed_same_data_other_seed_other_data(world):
    assert generate_split("test", 30, LEVELS, seed=7) == world["test"]
    other = generate_split("test", 30, LEVELS, seed=8)
    assert {p.question for p in other} != {p.question for p in world["test"]}


def test_a_split_does_not_depend_on_the_other_splits_sizes():
    small = generate_split("test", 5, (2,), seed=1)
    assert generate_split("test", 9, (2,), seed=1)[:5] == small


def test_level_is_the_number_of_arrows_to_follow(world):
    for problem in world["train"]:
        graph, start, steps = parse_question(problem.question)
        assert steps == problem.level and len(graph) == 8  # every question lists the same number of arrows
        path = [start]
        for _ in range(steps):
            path.append(graph[path[-1]])
        assert len(set(path)) == len(path)  # the chain never revisits a node
        assert path[-1] in graph  # the end has an arrow out too: "where the arrows stop" is never the answer
        assert problem.plan.count("->") == problem.level
        assert problem.id.startswith(f"toy-train-L{problem.level}-")


def test_gold_plans_stop_short_of_the_answer_and_check_out(world):
    for problem in [p for problems in world.values() for p in problems]:
        assert solve_question(problem.question) == problem.answer
        assert execute_plan(problem.chain_of_thought, problem.question) == problem.answer
        # The plan leaves the last step to the executor: the answer is not in it, but following it leads there.
        assert execute_plan(problem.plan, problem.question) == problem.answer
        assert problem.plan.endswith("->")
        nodes = [int(n) for n in re.findall(r"\d+", problem.plan)]
        assert len(nodes) == problem.level and problem.answer not in nodes
        assert problem.chain_of_thought.endswith(f"\\boxed{{{problem.answer}}}")
        assert problem.last_step == f"Last step: {nodes[-1]} -> {problem.answer}. \\boxed{{{problem.answer}}}"
        assert 0 <= problem.answer < 10


def test_a_plan_cut_short_by_its_canvas_leaves_the_rest_of_the_path_to_the_executor():
    config = WorldConfig()
    problems = generate_split("test", 20, config.levels, 0, config.nodes, config.arrows, plan_nodes=config.plan_nodes)
    cut = 0
    for problem in problems:
        nodes = [int(n) for n in re.findall(r"\d+", problem.plan)]
        assert len(nodes) == min(problem.level, config.plan_nodes) and problem.answer not in nodes
        assert nodes == problem.path[: len(nodes)] and problem.path[-1] == problem.answer
        assert execute_plan(problem.plan, problem.question) == problem.answer
        rest = problem.path[len(nodes) - 1 :]
        assert problem.last_step == f"Last step: {' -> '.join(map(str, rest))}. \\boxed{{{problem.answer}}}"
        cut += problem.level > config.plan_nodes
    assert cut == 20 * sum(level > config.plan_nodes for level in config.levels) > 0  # the default world cuts some


def test_execute_plan_rejects_wrong_plans():
    problem = make_problem(random.Random(0), 3, 10, 8)
    graph, start, _ = parse_question(problem.question)
    with pytest.raises(DataError, match="starts at"):
        execute_plan(f"Path: {(start + 1) % 10} ->", problem.question)
    wrong = next(n for n in range(10) if n not in (graph[start], start))
    with pytest.raises(DataError, match="not an arrow"):
        execute_plan(f"Path: {start} -> {wrong} ->", problem.question)
    with pytest.raises(DataError, match="cannot parse"):
        execute_plan("this is not a plan", problem.question)
    with pytest.raises(DataError, match="not a toy question"):
        solve_question("What is 2 + 2?")


def test_config_fingerprint_is_stable_and_sensitive():
    assert WorldConfig().fingerprint() == WorldConfig().fingerprint()
    assert WorldConfig(seed=1).fingerprint() != WorldConfig().fingerprint()
    assert quick_config().fingerprint() != WorldConfig().fingerprint()
    planner = dataclasses.replace(WorldConfig().planner, steps=7)
    assert WorldConfig(planner=planner).fingerprint() != WorldConfig().fingerprint()
    with pytest.raises(ConfigError, match="divisible"):
        WorldConfig(plan_length=12, block_length=8)
    with pytest.raises(ConfigError, match="levels"):
        WorldConfig(levels=(0, 1))
    with pytest.raises(ConfigError, match="arrows"):
        WorldConfig(levels=tuple(range(1, 13)))
    with pytest.raises(ConfigError, match="latent"):
        WorldConfig(executor=dataclasses.replace(WorldConfig().executor, mixture=Mixture(execute=1, latent=1)))
    assert WorldConfig().prefix_executor_spec(100).mixture.latent == 1.0
    assert WorldConfig(prefix_executor=False).fingerprint() != WorldConfig().fingerprint()
    with pytest.raises(ConfigError, match="planner_init"):
        WorldConfig(planner=dataclasses.replace(WorldConfig().planner, d_model=64))
    assert WorldConfig(planner=dataclasses.replace(WorldConfig().planner, d_model=64), planner_init="scratch")


def test_world_of_a_config_has_its_sizes():
    config = quick_config()
    splits = generate_world(config)
    assert len(splits["train"]) == config.train_per_level * len(config.levels)
    assert {p.level for p in splits["test"]} == set(config.levels)
    assert max(p.answer for p in splits["train"]) < config.nodes


def test_tokenizer_round_trips_every_prompt_without_unknown_tokens(world, toy_tok, tmp_path):
    toy_tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.pad_token_id != loaded.mask_token_id
    assert loaded.convert_tokens_to_ids("<|mdm_mask|>") == loaded.mask_token_id
    assert loaded.eos_token == "<|endoftext|>"
    templates = PromptTemplates()
    for problem in world["test"][::7]:
        q = problem.question
        texts = [
            templates.planner_prompt(q),
            templates.text_executor_prompt(q, problem.plan, "integer"),
            templates.latent_executor_prompt(q, "integer"),
            templates.direct_prompt(q, "integer"),
            templates.direct_prompt(q, "integer", chain_of_thought=True),
            templates.direct_prompt(q, "mc", chain_of_thought=True),
            templates.text_executor_prompt(q, problem.plan, "mc"),
            problem.chain_of_thought,
            problem.last_step,
        ]
        for text in texts + [chat_text(loaded, t, system=True) for t in texts]:
            ids = loaded(text, add_special_tokens=False)["input_ids"]
            assert loaded.unk_token_id not in ids, text
            assert loaded.decode(ids) == text


def test_tokenizer_keeps_sequences_short(world, toy_tok):
    for phrase in template_phrases(PromptTemplates()):
        assert len(toy_tok(phrase, add_special_tokens=False)["input_ids"]) == 1
    for number in range(100):
        assert len(toy_tok(f" {number}", add_special_tokens=False)["input_ids"]) == 1
    assert len(toy_tok("\\boxed{7}", add_special_tokens=False)["input_ids"]) == 3
    # An arrow is one token in a question and a path step one token in a plan, for every pair of nodes.
    for a in range(10):
        assert len(toy_tok(f" {a} ->", add_special_tokens=False)["input_ids"]) == 1
        for b in range(10):
            if a != b:
                assert toy_tok.unk_token_id not in toy_tok(f" {a}->{b}", add_special_tokens=False)["input_ids"]
    problem = world["test"][-1]
    # "Arrows:", the 8 arrows, ". Start at", the start, " and follow", the level, " arrows. Where do you end?"
    assert len(toy_tok(problem.question, add_special_tokens=False)["input_ids"]) == 1 + 8 + 5
    assert len(toy_tok(problem.plan, add_special_tokens=False)["input_ids"]) == 1 + problem.level


def test_mixtures_pad_diffusion_replies_and_end_every_reply_with_eot(world, toy_tok):
    eot = toy_tok.convert_tokens_to_ids("<|eot_id|>")
    problems = world["train"][:20]
    everything = Mixture(plan=1, execute=1, direct=1, cot=1)
    for example in planner_examples(problems, toy_tok, everything, plan_length=16, answer_length=8):
        assert len(example.response_ids) == (16 if example.task in ("plan", "cot") else 8)
        assert eot in example.response_ids
        assert set(example.response_ids[example.response_ids.index(eot) + 1 :]) <= {toy_tok.eos_token_id}
    with pytest.raises(ConfigError, match="plan_length"):
        executor_examples(problems, toy_tok, Mixture(latent=1))
    examples = executor_examples(
        problems, toy_tok, Mixture(plan=1, execute=1, direct=1, cot=1, latent=1), plan_length=8
    )
    assert {e.task for e in examples} == set(TASKS)
    assert all(e.response_ids[-1] == eot for e in examples)
    # The latent task: the plan canvas (plan, end of turn, EOS padding to plan_length) sits before the chat prompt
    # of the latent executor, where the latent pipeline splices the projected latents.
    latent = [e for e in examples if e.task == "latent"]
    assert len(latent) == len(problems)
    for example, problem in zip(latent, problems, strict=True):
        plan_ids = toy_tok(problem.plan, add_special_tokens=False)["input_ids"]
        (canvas,) = plan_canvases(toy_tok, [problem.plan], 8)
        assert canvas == [*plan_ids, eot] + [toy_tok.eos_token_id] * (8 - len(plan_ids) - 1)
        chat = toy_tok(
            chat_text(toy_tok, PromptTemplates().latent_executor_prompt(problem.question, "integer")),
            add_special_tokens=False,
        )["input_ids"]
        chat_with_system = toy_tok(
            chat_text(toy_tok, PromptTemplates().latent_executor_prompt(problem.question, "integer"), system=True),
            add_special_tokens=False,
        )["input_ids"]
        assert list(example.prompt_ids) in ([*canvas, *chat], [*canvas, *chat_with_system])
        assert toy_tok.decode(list(example.response_ids), skip_special_tokens=True) == problem.last_step
    with pytest.raises(ConfigError, match="does not fit"):
        planner_examples(world["train"][-5:], toy_tok, Mixture(plan=1), plan_length=4, answer_length=8)


def test_default_canvases_hold_every_reply():
    config = WorldConfig()
    problems = generate_split("train", 20, config.levels, 0, config.nodes, config.arrows, plan_nodes=config.plan_nodes)
    toy_tok = toy_tokenizer(problems, nodes=config.nodes)
    hardest = [p for p in problems if p.level == max(config.levels)]
    lengths = dict(plan_length=config.plan_length, answer_length=config.answer_length)
    assert planner_examples(hardest, toy_tok, Mixture(plan=1, execute=1, direct=1), **lengths)


def test_prompt_and_reply_use_the_project_templates(world):
    problem = world["test"][-1]
    templates = PromptTemplates()
    assert prompt_and_reply(problem, "plan", templates) == (templates.planner_prompt(problem.question), problem.plan)
    prompt, reply = prompt_and_reply(problem, "execute", templates)
    assert prompt == templates.text_executor_prompt(problem.question, problem.plan, "integer")
    assert reply == problem.last_step and reply.endswith(f"\\boxed{{{problem.answer}}}")
    prompt, reply = prompt_and_reply(problem, "cot", templates)
    assert prompt == templates.direct_prompt(problem.question, "integer", chain_of_thought=True)
    assert reply == problem.chain_of_thought and reply.startswith(problem.plan)
    assert prompt_and_reply(problem, "direct", templates)[1] == f"\\boxed{{{problem.answer}}}"
    prompt, reply = prompt_and_reply(problem, "latent", templates)
    assert (prompt, reply) == (templates.latent_executor_prompt(problem.question, "integer"), problem.last_step)
    with pytest.raises(ConfigError, match="unknown task"):
        prompt_and_reply(problem, "dance", templates)
