"""The typed pipeline spec: the JSON layout results directories already hold loads into it and is written back
unchanged (so they resume); a malformed spec is a one-line error naming the field."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from latent_darm.errors import ConfigError
from latent_darm.evaluation.runner import check_run_config, evaluate
from latent_darm.models.diffusion_gemma.sampler import DiffusionGemmaSamplerConfig
from latent_darm.models.dream.sampler import DreamSamplerConfig
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.builder import build_spec, pipeline_spec
from latent_darm.pipelines.spec import (
    AutoregressiveRole,
    DiffusionRole,
    PipelineSpec,
    ProjectorSpec,
    SamplerSpec,
    TemplatesSpec,
    sampler_settings,
)
from latent_darm.sampling import field_names
from tests.evaluation.test_runner import FakePipeline, make_examples

# Specs exactly as ``darm eval`` wrote them into config.json before the spec was typed (printed by that code).
STORED = {
    "arm CoT": '{"kind": "arm", "planner": null, "executor": {"kind": "arm", "model": "qwen", "max_new_tokens": 1024, '
    '"repetition_penalty": 1.0}, "projector": null, "chain_of_thought": true, "latent_noise": 0.0, "prompts": null, '
    '"dtype": "float32"}',
    "ddlm fast": '{"kind": "ddlm", "planner": null, "executor": {"kind": "ddlm", "model": "llada", "gen_length": 256, '
    '"steps": 256, "block_length": 32, "threshold": 0.9, "cache": "dual"}, "projector": null, "chain_of_thought": '
    'false, "latent_noise": 0.0, "prompts": null, "dtype": "float32"}',
    "text ddlm→arm": '{"kind": "text", "planner": {"kind": "ddlm", "model": "llada", "gen_length": 64, "steps": 64, '
    '"block_length": 32, "threshold": null, "cache": "none"}, "executor": {"kind": "arm", "model": "qwen", '
    '"max_new_tokens": 32, "repetition_penalty": 1.0}, "projector": null, "chain_of_thought": false, '
    '"latent_noise": 0.0, "prompts": null, "dtype": "bfloat16"}',
    "text arm→ddlm": '{"kind": "text", "planner": {"kind": "arm", "model": "p", "max_new_tokens": 256, '
    '"repetition_penalty": 1.0}, "executor": {"kind": "ddlm", "model": "e", "gen_length": 32, "steps": 32, '
    '"block_length": 32, "threshold": null, "cache": "none"}, "projector": null, "chain_of_thought": false, '
    '"latent_noise": 0.0, "prompts": null, "dtype": "float32"}',
    "latent": '{"kind": "latent", "planner": {"kind": "ddlm", "model": "llada", "gen_length": 64, "steps": 32, '
    '"block_length": 32, "threshold": null, "cache": "none"}, "executor": {"kind": "arm", "model": "qwen", '
    '"max_new_tokens": 8, "repetition_penalty": 1.0}, "projector": "proj", "chain_of_thought": false, '
    '"latent_noise": 0.5, "prompts": null, "dtype": "float32"}',
}
OPTIONS = {
    "arm CoT": {"pipeline": "arm", "executor": "qwen", "chain_of_thought": True},
    "ddlm fast": {"pipeline": "ddlm", "planner": "llada", "threshold": 0.9, "cache": "dual"},
    "text ddlm→arm": {"pipeline": "text", "planner": "llada", "executor": "qwen", "gen_length": 64, "dtype": "bf16"},
    "text arm→ddlm": {
        "pipeline": "text",
        "planner": "p",
        "executor": "e",
        "planner_kind": "arm",
        "executor_kind": "ddlm",
    },
    "latent": {
        "pipeline": "latent",
        "planner": "llada",
        "executor": "qwen",
        "projector": "proj",
        "gen_length": 64,
        "latent_noise": 0.5,
        "steps": 32,
        "max_new_tokens": 8,
    },
}


@pytest.mark.parametrize("name", list(STORED))
def test_a_stored_spec_loads_and_is_written_back_unchanged(name):
    stored = json.loads(STORED[name])
    spec = PipelineSpec.from_dict(stored)
    assert spec.to_dict() == stored and list(spec.to_dict()) == list(stored)
    if name != "latent":  # the latent planner's settings now come from the projector (its own tests)
        assert build_spec(**OPTIONS[name]) == stored  # the options that made it still make it
        assert pipeline_spec(**OPTIONS[name]) == spec


def test_the_typed_parts_hold_the_settings():
    spec = PipelineSpec.from_dict({**json.loads(STORED["latent"]), "device": "cuda:1", "force_projector": True})
    assert spec.planner == DiffusionRole("llada", SamplerSpec(gen_length=64, steps=32, block_length=32, cache="none"))
    assert spec.executor == AutoregressiveRole("qwen", 8)
    assert spec.projector == ProjectorSpec("proj", 0.5, force=True)
    assert (spec.templates, spec.dtype, spec.device, spec.latent_noise) == (TemplatesSpec(), "float32", "cuda:1", 0.5)
    assert "device" not in spec.to_dict() and spec.to_dict()["force_projector"] is True  # device: runtime only
    config = spec.planner.sampler.config(hidden_layer=-1)
    assert (config.gen_length, config.steps, config.threshold, config.cache, config.hidden_layer) == (
        64,
        32,
        None,
        "none",
        -1,
    )


@pytest.mark.parametrize(
    "settings",
    [
        '"gen_length": 64, "steps": 32, "block_length": 32, "threshold": 0.9, "cache": "prefix", '
        '"denoise_fraction": 0.5, "early_stop": true, "temperature": 0.5, "remasking": "random", "cfg_scale": 1.0, '
        '"logits_eos_inf": true, "confidence_eos_eot_inf": true, "confidence_eos_every_temperature": true, '
        '"lookahead": 4, "lookahead_choice": "nearest"',
        '"gen_length": 16, "steps": 16, "block_length": null, "threshold": null, "cache": "none", "temperature": 0.2, '
        '"remasking": "entropy", "top_p": 0.9, "top_k": 5, "alg_temp": 0.1, "latent_rows": "predictor"',
    ],
)
def test_a_role_with_every_setting_keeps_the_stored_key_order(settings):
    """The key order specs were stored with (a run's identity hashes the bytes), whatever order a spec is built in."""
    stored = f'{{"kind": "ddlm", "model": "m", {settings}}}'
    role = DiffusionRole.from_dict(json.loads(stored), "executor.")
    assert json.dumps(role.to_dict()) == stored
    shuffled = dict(reversed(role.sampler.values().items()))
    assert json.dumps(DiffusionRole("m", SamplerSpec(**shuffled)).to_dict()) == stored


def test_optional_keys_are_written_only_when_set():
    stored = json.loads(STORED["text ddlm→arm"])
    stored["planner"] |= {"denoise_fraction": 0.5, "early_stop": True}
    spec = PipelineSpec.from_dict(stored)
    assert spec.planner.sampler.config().denoise_fraction == 0.5 and spec.to_dict() == stored
    plain = replace(spec, planner=replace(spec.planner, sampler=SamplerSpec(gen_length=64, steps=64, block_length=32)))
    assert "denoise_fraction" not in plain.to_dict()["planner"]


def test_a_role_may_carry_every_sampler_setting_but_the_latent_layer():
    families = (LLaDASamplerConfig, DreamSamplerConfig, DiffusionGemmaSamplerConfig)
    every = frozenset().union(*(field_names(family) for family in families))
    assert set(sampler_settings()) == every - {"hidden_layer"}
    stored = json.loads(STORED["ddlm fast"])
    stored["executor"] |= {"temperature": 0.5, "remasking": "random"}
    config = PipelineSpec.from_dict(stored).executor.sampler.config()
    assert (config.temperature, config.remasking, config.threshold) == (0.5, "random", 0.9)


def test_a_hand_written_spec_may_leave_out_keys_with_defaults():
    spec = PipelineSpec.from_dict({"kind": "arm", "executor": {"kind": "arm", "model": "m", "max_new_tokens": 4}})
    assert spec == PipelineSpec("arm", AutoregressiveRole("m", 4))


def _broken(path: str, value: object) -> dict:
    """The stored latent spec with one key (dotted path) set to ``value`` (``...`` removes it)."""
    spec = copy.deepcopy(json.loads(STORED["latent"]))
    *parents, key = path.split(".")
    target = spec
    for parent in parents:
        target = target[parent]
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("executor.max_new_tokens", ..., "pipeline spec: executor.max_new_tokens is missing"),
        ("planner.gen_length", "64", "pipeline spec: planner.gen_length must be an integer or null, got '64'"),
        ("planner.gen_length", True, "planner.gen_length must be an integer or null, got True"),
        ("planner.threshold", "high", "planner.threshold must be a number or null, got 'high'"),
        ("planner.block_length", 48, "pipeline spec: planner: gen_length 64 is not divisible by block_length 48"),
        ("planner.cache", "full", "planner: cache must be 'none', 'prefix' or 'dual', got 'full'"),
        ("planner.blok_length", 32, "pipeline spec: unknown key planner.blok_length"),
        ("planner.kind", "beam", "role kind must be 'ddlm' or 'arm', got 'beam'"),
        ("executor.max_new_tokens", 0, "pipeline spec: executor: max_new_tokens must be >= 1, got 0"),
        ("executor.model", None, "pipeline spec: executor.model must be a string, got None"),
        ("executor", None, "pipeline spec needs an 'executor' role"),
        ("planner", "llada", "pipeline 'latent' needs a 'planner' role"),
        ("projector", None, "the latent pipeline needs a 'projector'"),
        ("latent_noise", -1.0, "latent_noise must be a finite number >= 0, got -1.0"),
        ("latent_noise", float("nan"), "latent_noise must be a finite number >= 0, got nan"),
        ("executor.repetition_penalty", float("nan"), "executor: repetition_penalty must be a finite number > 0"),
        ("planner.temperature", float("inf"), "pipeline spec: planner: temperature must be a finite number, got inf"),
        ("planner.cfg_scale", float("nan"), "pipeline spec: planner: cfg_scale must be a finite number, got nan"),
        ("planner.steps", 128, "pipeline spec: planner: steps 128 exceeds gen_length 64"),
        ("dtype", "fp16", "dtype must be one of float32, bfloat16, float16, got 'fp16'"),
        ("kind", "beam", "pipeline kind must be one of arm, ddlm, text, latent; got 'beam'"),
        ("chain_of_thought", "yes", "pipeline spec: chain_of_thought must be true or false, got 'yes'"),
        ("label", "mine", "pipeline spec: unknown key label"),
    ],
)
def test_a_malformed_spec_is_one_line_naming_the_field(path, value, message):
    with pytest.raises(ConfigError) as info:
        PipelineSpec.from_dict(_broken(path, value))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_combinations_are_checked_when_built_too():
    executor = AutoregressiveRole("qwen", 8)
    with pytest.raises(ConfigError, match="pairs a ddlm planner with an arm executor"):
        PipelineSpec("latent", executor, planner=executor, projector=ProjectorSpec("proj"))
    with pytest.raises(ConfigError, match="pipeline 'text' has no projector"):
        PipelineSpec.from_dict({**json.loads(STORED["text ddlm→arm"]), "latent_noise": 0.5})
    with pytest.raises(ConfigError, match="pipeline 'arm' runs one model"):
        PipelineSpec("arm", executor, planner=executor)
    with pytest.raises(ConfigError, match="chain_of_thought is for arm or ddlm alone"):
        PipelineSpec("text", executor, planner=executor, chain_of_thought=True)


def test_a_results_directory_written_before_the_typed_spec_resumes(tmp_path, darm):
    """A config.json in the old layout passes ``darm eval``'s resume check with the same options; ``darm
    diagnose`` reads its spec; a malformed stored spec is exit code 2 with the field named."""
    out = tmp_path / "run"
    old = {"benchmark": "gsm8k", "subset": {"limit": None, "seed": None}, "spec": json.loads(STORED["text ddlm→arm"])}
    evaluate(FakePipeline(), make_examples(4), out, batch_size=2, config=old, progress=False)
    assert json.loads((out / "config.json").read_text())["spec"] == json.loads(STORED["text ddlm→arm"])
    again = {"benchmark": "gsm8k", "subset": {"limit": None, "seed": None}}
    assert check_run_config(out, {**again, "spec": build_spec(**OPTIONS["text ddlm→arm"])}, partial=True) is not None
    with pytest.raises(ConfigError, match=r"spec.planner.gen_length: 64 there, 256 now"):
        check_run_config(
            out, {**again, "spec": build_spec(**{**OPTIONS["text ddlm→arm"], "gen_length": None})}, partial=True
        )

    stored = json.loads((out / "config.json").read_text())
    stored["spec"]["planner"]["steps"] = "many"
    (out / "config.json").write_text(json.dumps(stored))
    code, _, stderr = darm("diagnose", out, "--no-progress")
    assert code == 2 and stderr.strip().endswith("pipeline spec: planner.steps must be an integer or null, got 'many'")
    assert len(stderr.strip().splitlines()) == 1
