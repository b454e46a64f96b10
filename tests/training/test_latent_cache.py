"""Stage 1: latents are computed once, stored exactly, resumed after a kill, and never mixed across settings."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from latent_darm.errors import ConfigError, DataError
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.checkpoint import load_llada, save_llada
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.training.data import TrainingExample, example_id
from latent_darm.training.latent_cache import LatentCache, build_latent_cache

SAMPLER = LLaDASamplerConfig(gen_length=8, block_length=8, steps=8, hidden_layer=-1)


def _examples(n: int, start: int = 0) -> list[TrainingExample]:
    questions = [f"What is {i} plus {i + 1}?" for i in range(start, start + n)]
    return [
        TrainingExample(example_id("toy", q), q, str(2 * i + 1), "math", "toy")
        for i, q in zip(range(start, start + n), questions, strict=True)
    ]


@pytest.fixture
def planner(llada_dir):
    return DiffusionLM.from_pretrained(llada_dir)


class CountingPlanner:
    """Counts generate() calls and can fail on the n-th, like a job killed mid-run."""

    def __init__(self, planner: DiffusionLM, fail_on_call: int | None = None) -> None:
        self.inner, self.calls, self.fail_on_call = planner, 0, fail_on_call

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, config, **kwargs):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return self.inner.generate(prompts, config, **kwargs)


def test_cached_latents_are_the_planners_latents(tmp_path, planner):
    examples = _examples(5)
    cache = build_latent_cache(planner, examples, tmp_path, SAMPLER, PromptTemplates(), batch_size=2, shard_size=3)
    templates = PromptTemplates()
    direct = planner.generate([templates.planner_prompt(e.question) for e in examples], SAMPLER, batch_size=1)
    stored = cache.load([e.id for e in examples])
    assert stored.dtype == torch.float16 and stored.shape == (5, 8, planner.hidden_size)
    expected = torch.stack([p.latents for p in direct]).half()
    assert torch.allclose(stored.float(), expected.float(), atol=1e-2, rtol=1e-2)
    assert [cache.plan(e.id) for e in examples] == [p.text for p in direct]
    reopened = LatentCache.open(tmp_path)
    assert len(reopened) == 5 and torch.equal(reopened.load([examples[3].id]), stored[3:4])


def test_resume_computes_only_what_is_missing(tmp_path, planner):
    killed = CountingPlanner(planner, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(killed, _examples(6), tmp_path, SAMPLER, PromptTemplates(), batch_size=2, shard_size=4)
    assert len(LatentCache.open(tmp_path)) == 4  # the first shard survived, the half-built second did not
    counting = CountingPlanner(planner)
    cache = build_latent_cache(
        counting, _examples(6) + _examples(2, start=6), tmp_path, SAMPLER, PromptTemplates(), batch_size=2, shard_size=4
    )
    assert counting.calls == 2 and len(cache) == 8


def test_a_different_setting_is_refused(tmp_path, planner):
    build_latent_cache(planner, _examples(2), tmp_path, SAMPLER, PromptTemplates())
    other = LLaDASamplerConfig(gen_length=16, block_length=8, steps=16, hidden_layer=-1)
    with pytest.raises(ConfigError, match="built with a different 'sampler'"):
        build_latent_cache(planner, _examples(2), tmp_path, other, PromptTemplates())


def test_bad_input(tmp_path, planner):
    with pytest.raises(ConfigError, match="needs sampler.hidden_layer"):
        build_latent_cache(
            planner,
            _examples(1),
            tmp_path,
            LLaDASamplerConfig(gen_length=8, block_length=8, steps=8),
            PromptTemplates(),
        )
    with pytest.raises(DataError, match="duplicate ids"):
        build_latent_cache(planner, _examples(1) * 2, tmp_path / "dup", SAMPLER, PromptTemplates())
    with pytest.raises(DataError, match="not a latent cache"):
        LatentCache.open(tmp_path / "nothing")
    cache = build_latent_cache(planner, _examples(1), tmp_path / "one", SAMPLER, PromptTemplates())
    with pytest.raises(DataError, match="no latents for example 'missing'"):
        cache.load(["missing"])


def _contents(directory) -> dict[str, tuple[torch.Tensor, str]]:
    cache = LatentCache.open(directory)
    return {key: (cache.load([key])[0], cache.plan(key)) for key in cache.index}


def test_a_truncated_shard_counts_as_missing_and_is_computed_again(tmp_path, planner):
    """A shard cut short (a full disk, a copy interrupted) is not a safetensors error at training time: its examples
    are computed again, and the cache then holds what an undamaged build holds."""
    build_latent_cache(
        planner, _examples(6), tmp_path / "whole", SAMPLER, PromptTemplates(), batch_size=2, shard_size=4
    )
    damaged = tmp_path / "damaged"
    build_latent_cache(planner, _examples(6), damaged, SAMPLER, PromptTemplates(), batch_size=2, shard_size=4)
    first = damaged / "shard-r0-00000.safetensors"
    first.write_bytes(first.read_bytes()[:100])
    assert len(LatentCache.open(damaged)) == 2  # the damaged shard's four examples count as missing
    counting = CountingPlanner(planner)
    build_latent_cache(counting, _examples(6), damaged, SAMPLER, PromptTemplates(), batch_size=2, shard_size=4)
    assert counting.calls == 2
    ours, whole = _contents(damaged), _contents(tmp_path / "whole")
    assert ours.keys() == whole.keys()
    assert all(torch.equal(ours[k][0], whole[k][0]) and ours[k][1] == whole[k][1] for k in ours)
    assert not first.exists()  # removed with its sidecar, not left beside the recomputed shard
    assert len(list(damaged.glob("shard-*"))) == len(list((tmp_path / "whole").glob("shard-*")))


def test_a_copied_planner_reuses_the_cache_and_replaced_weights_are_refused(tmp_path, planner, llada_dir):
    """The spec names the planner by its weights: the same weights elsewhere reuse the latents, other weights in
    the same place are refused (they would make other latents)."""
    build_latent_cache(planner, _examples(2), tmp_path / "cache", SAMPLER, PromptTemplates())
    copy = shutil.copytree(llada_dir, tmp_path / "elsewhere")
    counting = CountingPlanner(DiffusionLM.from_pretrained(copy))
    build_latent_cache(counting, _examples(2), tmp_path / "cache", SAMPLER, PromptTemplates())
    assert counting.calls == 0
    model = load_llada(copy)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    save_llada(model, copy)
    with pytest.raises(ConfigError, match="built with a different 'planner_weights'"):
        build_latent_cache(DiffusionLM.from_pretrained(copy), _examples(2), tmp_path / "cache", SAMPLER,
                           PromptTemplates())  # fmt: skip


def test_two_processes_on_one_cache_compute_each_latent_once(tmp_path, planner):
    """The second build waits for the first's lock, then finds every latent made: no duplicate shards."""
    import threading

    first_started, counting = threading.Event(), CountingPlanner(planner)
    original = counting.generate

    def slow_generate(prompts, config, **kwargs):
        first_started.set()
        time.sleep(0.5)
        return original(prompts, config, **kwargs)

    counting.generate = slow_generate
    worker = threading.Thread(
        target=build_latent_cache, args=(counting, _examples(3), tmp_path, SAMPLER, PromptTemplates())
    )
    worker.start()
    assert first_started.wait(60)
    second = CountingPlanner(planner)
    cache = build_latent_cache(second, _examples(3), tmp_path, SAMPLER, PromptTemplates())
    worker.join()
    assert second.calls == 0 and len(cache) == 3
    assert [p.name for p in tmp_path.glob("shard-*.safetensors")] == ["shard-r0-00000.safetensors"]
