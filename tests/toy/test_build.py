"""Building the quick world: every loss goes down, the checkpoints open through the public loaders, the cache is
reused, an interrupted build leaves no entry and resumes after its last finished model, and the test split
registers as benchmarks."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.evaluation.benchmarks import get_benchmark, load_benchmark
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.checkpoint import load_llada
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
    planner = DiffusionLM.from_pretrained(artifacts.planner_dir)
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


def _small(seed: int):
    """The quick world with a few training steps: enough to build every file, fast enough to build three times."""
    config = quick_config(seed=seed)
    return dataclasses.replace(
        config,
        train_per_level=40,
        planner=dataclasses.replace(config.planner, steps=3, warmup_steps=1),
        executor=dataclasses.replace(config.executor, steps=3, warmup_steps=1),
    )


def _weights(artifacts, role: str) -> dict[str, torch.Tensor]:
    if role == "planner":
        return load_llada(artifacts.planner_dir).state_dict()
    return AutoModelForCausalLM.from_pretrained(artifacts.executor_dir).state_dict()


def test_an_interrupted_build_leaves_no_entry_and_resumes_after_its_finished_model(tmp_path, monkeypatch):
    config = _small(seed=5)
    uninterrupted = build_world(config, tmp_path / "uninterrupted", progress=False)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    cache = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.setattr(build_module, "train_diffusion_sft", killed)
        with pytest.raises(RuntimeError, match="killed"):
            build_world(config, cache, progress=False)
    partial = cache / f".{config.fingerprint()}.partial"
    assert not (cache / config.fingerprint()).exists()  # no entry a later run could take as finished
    assert (partial / "executor" / build_module.HISTORY_FILE).exists()
    assert not (partial / "planner" / build_module.HISTORY_FILE).exists()
    executor_seconds = json.loads((partial / build_module.TIMINGS_FILE).read_text())["executor"]

    trained = []
    train_executor = build_module._train_executor
    monkeypatch.setattr(build_module, "_train_executor", lambda *a, **k: trained.append(1) or train_executor(*a, **k))
    resumed = build_world(config, cache, progress=False)
    assert trained == [] and not resumed.reused and not partial.exists()
    assert resumed.timings["executor"] == executor_seconds
    assert resumed.timings["total"] == pytest.approx(sum(v for k, v in resumed.timings.items() if k != "total"))
    assert not (resumed.directory / build_module.TIMINGS_FILE).exists()
    # The same world as a build that was never interrupted.
    assert resumed.problems("test") == uninterrupted.problems("test")
    for role in ("executor", "planner"):
        ours, reference = _weights(resumed, role), _weights(uninterrupted, role)
        assert ours.keys() == reference.keys()
        assert all(torch.equal(ours[k], reference[k]) for k in ours), role
    assert build_world(config, cache, progress=False).reused


def test_a_model_killed_while_saving_is_trained_again(tmp_path, monkeypatch):
    """A model directory without its history (written last) is incomplete: the next build trains it afresh."""
    config = _small(seed=7)
    partial = tmp_path / f".{config.fingerprint()}.partial"
    (partial / "executor").mkdir(parents=True)
    (partial / "executor" / "model.safetensors").write_bytes(b"half a file")
    artifacts = build_world(config, tmp_path, progress=False)
    histories = artifacts.histories()
    assert len(histories["executor"]["losses"]) == config.executor.steps
    assert AutoModelForCausalLM.from_pretrained(artifacts.executor_dir).config.model_type == "llama"


def test_a_pickled_executor_in_a_half_built_world_is_never_loaded(tmp_path, monkeypatch):
    """A finished-looking executor in the partial directory whose weights are a pickle (``pytorch_model.bin``) is not
    the build's own (it writes safetensors only): it is trained again, and torch never unpickles it."""
    config = _small(seed=8)
    reference = build_world(config, tmp_path / "reference", progress=False)
    partial = tmp_path / "cache" / f".{config.fingerprint()}.partial"
    shutil.copytree(reference.executor_dir, partial / "executor")
    (partial / "executor" / "model.safetensors").unlink()
    torch.save({"planted": torch.zeros(1)}, partial / "executor" / "pytorch_model.bin")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called on a cache file")

    monkeypatch.setattr(torch, "load", no_pickle)
    rebuilt = build_world(config, tmp_path / "cache", progress=False)
    ours, theirs = _weights(rebuilt, "executor"), _weights(reference, "executor")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_pickle_only_executor_in_a_finished_world_is_one_line(tmp_path, monkeypatch):
    config = _small(seed=8)
    artifacts = build_world(config, tmp_path, progress=False)
    (artifacts.executor_dir / "model.safetensors").unlink()
    torch.save({"planted": torch.zeros(1)}, artifacts.executor_dir / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called on a cache file"))
    with pytest.raises(CheckpointError, match=r"only pickle weights found \(pytorch_model\.bin\)"):
        artifacts.load_executor()


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
