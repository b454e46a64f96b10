"""A projector remembers the planner sampler settings its training latents were made with, and ``darm eval``,
``darm solve``, the Python API and ``build_pipeline`` use them by default; a different explicit value is used,
warned about once and recorded with the results."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from latent_darm.api import LatentDARM
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.builder import build_spec
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.projector.model import Projector, ProjectorConfig

QUESTION = "What is 3x + 7 = 22?"
# Plan length 8 (the toy world's) with non-default settings everywhere a trainer could set them.
TRAINED = LLaDASamplerConfig(gen_length=8, block_length=4, steps=4, denoise_fraction=0.5, cache="prefix", threshold=0.9)


def save_projector(directory, llada_dir, executor_dir, sampler: LLaDASamplerConfig | None):
    planner = DiffusionLM.from_pretrained(llada_dir)
    executor = AutoregressiveLM.from_pretrained(executor_dir)
    torch.manual_seed(0)
    stored = {} if sampler is None else {"planner_sampler": sampler.to_dict()}
    return Projector.for_pair(planner, executor, plan_length=8, hidden_dim=16, **stored).save_pretrained(directory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, llada_dir, executor_dir):
    return save_projector(tmp_path_factory.mktemp("projector") / "p", llada_dir, executor_dir, TRAINED)


def planner_settings(role: dict) -> dict:
    return {k: role[k] for k in ("gen_length", "block_length", "steps", "denoise_fraction", "cache", "threshold")}


def test_the_spec_defaults_to_the_training_settings_and_records_an_explicit_difference(trained):
    spec = build_spec(pipeline="latent", planner="p", executor="e", projector=str(trained))
    assert planner_settings(spec["planner"]) == planner_settings(TRAINED.to_dict())
    assert spec["planner"]["remasking"] == "low_confidence" and "sampler_differs_from_training" not in spec
    spec = build_spec(pipeline="latent", planner="p", executor="e", projector=str(trained), steps=8, cache="none")
    assert (spec["planner"]["steps"], spec["planner"]["cache"], spec["planner"]["block_length"]) == (8, "none", 4)
    assert spec["sampler_differs_from_training"] == {
        "steps": {"trained": 4, "used": 8},
        "cache": {"trained": "prefix", "used": "none"},
    }


def test_build_pipeline_and_the_api_fill_in_the_stored_settings_and_warn_once(trained, llada_dir, executor_dir, caplog):
    models = ModelCache(torch.float32, "cpu")
    bare = {"kind": "ddlm", "model": str(llada_dir)}
    spec = {"kind": "latent", "planner": bare, "executor": {"kind": "arm", "model": str(executor_dir),
            "max_new_tokens": 4}, "projector": str(trained)}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        pipeline = build_pipeline(spec, models)
    assert pipeline.sampler == LLaDASamplerConfig(**{**TRAINED.to_dict(), "hidden_layer": -1})
    assert not caplog.records and "sampler_differs_from_training" not in pipeline.describe()
    with caplog.at_level(logging.WARNING):
        pipeline = build_pipeline({**spec, "planner": {**bare, "denoise_fraction": 1.0}}, models)
    assert pipeline.sampler.denoise_fraction == 1.0
    assert pipeline.describe()["sampler_differs_from_training"] == {"denoise_fraction": {"trained": 0.5, "used": 1.0}}
    assert [r.getMessage().count("denoise_fraction 1.0 (trained with 0.5)") for r in caplog.records] == [1]
    api = LatentDARM.from_pretrained(llada_dir, executor_dir, trained, max_new_tokens=4)
    assert api.pipeline.sampler == LLaDASamplerConfig(**{**TRAINED.to_dict(), "hidden_layer": -1})


def test_solve_and_eval_with_a_plan_length_8_projector_need_no_block_length(
    darm, tmp_path, trained, llada_dir, executor_dir, caplog
):
    """Before: the default --block-length 32 did not divide the toy projector's 8 plan positions."""
    old_style = save_projector(tmp_path / "old", llada_dir, executor_dir, None)  # saved before settings were stored
    common = ["--planner", llada_dir, "--executor", executor_dir, "--max-new-tokens", "4", "--dtype", "float32"]
    for projector in (trained, old_style):
        code, out, err = darm("solve", QUESTION, "--pipeline", "latent", "--projector", projector, "--json", *common)
        assert code == 0, err
        assert json.loads(out)["planner_tokens"] == 8
    (tmp_path / "data/gsm8k").mkdir(parents=True)
    (tmp_path / "data/gsm8k/test.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "#### 5"}) + "\n")
    where = ["--benchmark", "gsm8k", "--data-dir", tmp_path / "data", "--device", "cpu", "--no-progress"]
    code, _, err = darm(
        "eval", "--pipeline", "latent", "--projector", trained, *common, *where, "--out", tmp_path / "a"
    )
    assert code == 0, err
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert planner_settings(config["spec"]["planner"]) == planner_settings(TRAINED.to_dict())
    # An explicit different value is allowed, warned about once and recorded with the results.
    with caplog.at_level(logging.WARNING, logger="latent_darm"):
        code, _, err = darm(
            "eval", "--pipeline", "latent", "--projector", trained, "--denoise-fraction", "1", *common, *where,
            "--out", tmp_path / "b",
        )  # fmt: skip
    assert code == 0, err
    warned = [r for r in caplog.records if r.name.startswith("latent_darm")]
    assert [r.getMessage().split(": ", 1)[1] for r in warned] == ["denoise_fraction 1.0 (trained with 0.5)"]
    config = json.loads((tmp_path / "b/config.json").read_text())
    differs = {"denoise_fraction": {"trained": 0.5, "used": 1.0}}
    assert config["spec"]["sampler_differs_from_training"] == differs
    assert config["pipeline"]["sampler_differs_from_training"] == differs


def test_an_old_projector_config_still_loads():
    config = ProjectorConfig.from_dict({"planner_dim": 4, "executor_dim": 4, "plan_length": 8})
    assert config.planner_sampler == {}


def test_the_lora_adapter_of_a_hub_id_projector_is_loaded(tmp_path, monkeypatch, llada_dir, executor_dir):
    """A projector named by hub id is resolved to its downloaded directory before looking for ``adapter/``."""
    import huggingface_hub
    from peft import LoraConfig, get_peft_model

    local = save_projector(tmp_path / "snapshot", llada_dir, executor_dir, None)
    lora = get_peft_model(
        AutoregressiveLM.from_pretrained(executor_dir).model, LoraConfig(r=2, target_modules=["q_proj"])
    )
    torch.nn.init.normal_(lora.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight)
    lora.save_pretrained(local / "adapter")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(local))
    models = ModelCache(torch.float32, "cpu")
    planner = {"kind": "ddlm", "model": str(llada_dir), "gen_length": 8, "steps": 8, "block_length": 8}
    spec = {"kind": "latent", "planner": planner, "projector": "someone/projector",
            "executor": {"kind": "arm", "model": str(executor_dir), "max_new_tokens": 4}}  # fmt: skip
    pipeline = build_pipeline(spec, models)
    assert ("arm+adapter", f"{executor_dir}|{local / 'adapter'}") in models.loaded
    plain = AutoregressiveLM.from_pretrained(executor_dir).model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(pipeline.executor.model.model.layers[0].self_attn.q_proj.weight, plain)
