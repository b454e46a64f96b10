"""Building the quick world: every loss goes down, the checkpoints open through the public loaders, the cache is
reused, a failed build leaves nothing behind, and the test split registers as benchmarks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.evaluation.benchmarks import get_benchmark, load_benchmark
from latent_darm.models.llada.checkpoint import load_llada
from latent_darm.models.planner import DiffusionPlanner
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.threads import single_thread
from latent_darm.toy import build as build_module
from latent_darm.toy.benchmarks import register_toy_benchmarks
from latent_darm.toy.build import build_world
from latent_darm.toy.models import new_executor, planner_from_executor
from latent_darm.toy.tokenizer import toy_tokenizer
from latent_darm.toy.world import generate_split, generate_world, quick_config


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_quick_build_trains_both_models(artifacts):
    assert not artifacts.reused
    assert artifacts.directory.name == quick_config().fingerprint()
    histories = artifacts.histories()
    for role in ("planner", "executor"):
        losses = histories[role]["losses"]
        assert len(losses) == getattr(artifacts.config, role).steps
        assert _mean(losses[-10:]) < 0.7 * _mean(losses[:10]), role
    assert set(artifacts.timings) >= {"data", "planner", "executor", "total"}


def test_data_on_disk_is_the_configs_world(artifacts):
    world = generate_world(artifacts.config)
    for split, problems in world.items():
        assert artifacts.problems(split) == problems


def test_checkpoints_open_through_the_public_loaders(artifacts):
    model = load_llada(artifacts.planner_dir)
    assert model.config.mask_token_id == AutoTokenizer.from_pretrained(artifacts.planner_dir).mask_token_id
    executor = AutoModelForCausalLM.from_pretrained(artifacts.executor_dir)
    assert executor.config.tie_word_embeddings
    assert executor.config.model_type == "llama"
    planner = DiffusionPlanner.from_pretrained(artifacts.planner_dir)
    question = artifacts.problems("test")[0].question
    (plan,) = planner.generate([PromptTemplates().planner_prompt(question)], artifacts.plan_sampler())
    assert len(plan.token_ids) == artifacts.config.plan_length
    tokenizer = AutoTokenizer.from_pretrained(artifacts.executor_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    batch = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    out = executor.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[1] <= batch["input_ids"].shape[1] + 4


def test_second_build_reuses_the_cache(artifacts, toy_cache):
    again = build_world(quick_config(), toy_cache, progress=False)
    assert again.reused
    assert again.directory == artifacts.directory and again.timings == artifacts.timings
    first, second = load_llada(artifacts.planner_dir), load_llada(again.planner_dir)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_a_failed_build_leaves_no_entry(tmp_path, monkeypatch):
    def explode(config, directory, progress):
        (directory / "planner").mkdir(parents=True)
        raise RuntimeError("killed")

    monkeypatch.setattr(build_module, "_build_into", explode)
    with pytest.raises(RuntimeError, match="killed"):
        build_world(quick_config(seed=5), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_manifest_is_reported(tmp_path):
    entry = tmp_path / quick_config(seed=6).fingerprint()
    entry.mkdir()
    (entry / build_module.MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        build_world(quick_config(seed=6), tmp_path, progress=False)
    (entry / build_module.MANIFEST).write_text(json.dumps({"timings": {}}))
    assert build_world(quick_config(seed=6), tmp_path, progress=False).reused


def test_test_split_registers_as_benchmarks_per_level(artifacts):
    names = register_toy_benchmarks(artifacts)
    assert names == ["toy", "toy1", "toy2", "toy3", "toy_train"]
    test = artifacts.problems("test")
    assert [(e.id, e.meta["level"]) for e in load_benchmark("toy")] == [(p.id, p.level) for p in test]
    for level in artifacts.config.levels:
        examples = load_benchmark(f"toy{level}")
        assert [e.question for e in examples] == [p.question for p in test if p.level == level]
        assert all(e.answer_type == "integer" and e.meta == {"level": level} for e in examples)
        assert examples[0].gold == str(test[(level - 1) * artifacts.config.test_per_level].answer)
    assert len(load_benchmark("toy_train")) == len(artifacts.problems("train"))
    assert get_benchmark("toy2").answer_type == "integer"
    assert register_toy_benchmarks(artifacts) == names  # re-registering a world replaces the names


def test_planner_from_executor_starts_as_the_executor():
    config = quick_config()
    tokenizer = toy_tokenizer(generate_split("test", 2, (1,), seed=0), nodes=config.nodes)
    executor = new_executor(config.executor, tokenizer, seed=1)
    planner = planner_from_executor(executor, config.planner, tokenizer)
    assert planner.config.n_layers == config.executor.layers + 1
    # One token attends only to itself, causal or not: the planner, extra block included, computes the executor.
    ids = torch.tensor([[tokenizer.bos_token_id]])
    with torch.no_grad():
        assert torch.allclose(planner(ids).logits, executor(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="does not fit"):
        planner_from_executor(executor, dataclasses.replace(config.planner, d_model=48), tokenizer)


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with single_thread(enabled=False):  # on a GPU the thread count is left alone
        assert torch.get_num_threads() == before
