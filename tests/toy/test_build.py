"""Building the quick world: every loss goes down, the checkpoints open through the public loaders, the cache is
reused, and a failed build leaves nothing behind."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latent_darm.errors import CheckpointError
from latent_darm.models.llada.checkpoint import load_llada
from latent_darm.models.planner import DiffusionPlanner
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.toy import build as build_module
from latent_darm.toy.build import build_world
from latent_darm.toy.world import generate_world, quick_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("toy-cache")


@pytest.fixture(scope="module")
def artifacts(cache):
    return build_world(quick_config(), cache, progress=False)


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


def test_second_build_reuses_the_cache(artifacts, cache):
    started = time.perf_counter()
    again = build_world(quick_config(), cache, progress=False)
    assert again.reused and time.perf_counter() - started < 5
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
