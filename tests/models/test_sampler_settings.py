"""Each planner family accepts only its own sampler settings, through one seam (``models.family.sampler_config``):
a family added beside the others brings its settings with it, and settings stored before the families had their
own (one config for all, He et al.'s knob named ``latent_tokens``) still load and resume."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import pytest

from latent_darm.errors import ConfigError
from latent_darm.evaluation.runner import check_run_config
from latent_darm.models import family as families
from latent_darm.models.family import current_sampler_dict, get_family, sampler_config, settings_for
from latent_darm.pipelines.factory import sampler_from_role
from latent_darm.pipelines.spec import DiffusionRole, PipelineSpec, SamplerSpec
from latent_darm.training.latent_cache import LatentCache

TOY = "tests.models.toy_family"
# SamplerConfig(gen_length=64, block_length=32, steps=64, latent_tokens=4, hidden_layer=-1).to_dict() at fa60b19,
# before each family had its own settings.
OLD_LLADA = {
    "gen_length": 64, "block_length": 32, "steps": 64, "temperature": 0.0, "remasking": "low_confidence",
    "cfg_scale": 0.0, "logits_eos_inf": False, "confidence_eos_eot_inf": False,
    "confidence_eos_every_temperature": False, "threshold": None, "cache": "none", "early_stop": False,
    "lookahead": None, "hidden_layer": -1, "denoise_fraction": 1.0, "top_p": None, "top_k": None, "alg_temp": None,
    "latent_rows": "plan", "latent_tokens": 4, "latent_choice": "nearest",
}  # fmt: skip
# sampler_config(Dream, gen_length=16, steps=16, top_p=0.9).to_dict() at fa60b19.
OLD_DREAM = {
    **OLD_LLADA, "gen_length": 16, "block_length": 16, "steps": 16, "remasking": "maskgit_plus", "hidden_layer": None,
    "top_p": 0.9, "latent_tokens": None,
}  # fmt: skip


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "toy", TOY)
    return get_family("toy")


def test_a_new_family_brings_its_own_settings_and_refuses_the_others(toy):
    config = sampler_config(toy, gen_length=8, steps=4, noise_schedule="cosine", threshold=None)
    assert (type(config).__name__, config.noise_schedule, config.steps) == ("ToySamplerConfig", "cosine", 4)
    with pytest.raises(ConfigError, match=r"^block_length is not a Toy sampler setting$"):
        sampler_config(toy, gen_length=8, steps=4, block_length=8)
    with pytest.raises(ConfigError, match=r"^noise_schedule must be 'linear' or 'cosine', got 'square'$"):
        sampler_config(toy, gen_length=8, steps=4, noise_schedule="square")
    with pytest.raises(ConfigError, match=r"^noise_schedule is not a LLaDA sampler setting$"):
        sampler_config(get_family("llada"), gen_length=8, steps=4, noise_schedule="cosine")
    # Without a family (a hub planner not yet downloaded): the family the settings fit.
    assert type(sampler_config(None, gen_length=8, steps=4, noise_schedule="cosine")).__name__ == "ToySamplerConfig"


def test_a_new_familys_setting_goes_through_the_stored_spec(toy):
    """Registering the family is all it takes: the spec stores its setting (after the keys every role has), reads it
    back type-checked, and the family's config gets it, as a run builds it (``sampler_from_role``)."""
    role = DiffusionRole("toy-planner", SamplerSpec(gen_length=8, steps=4, noise_schedule="cosine"))
    stored = json.dumps(PipelineSpec("ddlm", executor=role).to_dict())
    assert '"executor": {"kind": "ddlm", "model": "toy-planner", "gen_length": 8, "steps": 4, "block_length": null, ' \
        '"threshold": null, "noise_schedule": "cosine"}' in stored  # fmt: skip
    spec = PipelineSpec.from_dict(json.loads(stored))
    assert spec.executor == role and json.dumps(spec.to_dict()) == stored
    planner = SimpleNamespace(family=toy, sampler_config=functools.partial(sampler_config, toy))
    config = sampler_from_role(spec.executor, planner)
    assert (type(config).__name__, config.noise_schedule, config.gen_length) == ("ToySamplerConfig", "cosine", 8)
    assert sampler_from_role(spec.executor).noise_schedule == "cosine"  # a hub planner not downloaded yet
    bad = json.loads(stored)
    bad["executor"]["noise_schedule"] = 3  # typed as the family's config types it
    with pytest.raises(ConfigError, match=r"^pipeline spec: executor\.noise_schedule must be a string or null, got 3$"):
        PipelineSpec.from_dict(bad)
    bad["executor"]["noise_schedule"] = "square"  # checked by the family's config
    with pytest.raises(ConfigError, match=r"^pipeline spec: executor: noise_schedule must be 'linear' or 'cosine'"):
        PipelineSpec.from_dict(bad)


def test_a_setting_no_registered_family_has_is_an_unknown_key():
    stored = {"kind": "ddlm", "executor": {"kind": "ddlm", "model": "p", "gen_length": 8, "steps": 4}}
    stored["executor"]["noise_schedule"] = "cosine"  # the toy family is not registered here
    with pytest.raises(ConfigError, match=r"^pipeline spec: unknown key executor\.noise_schedule$"):
        PipelineSpec.from_dict(stored)
    with pytest.raises(ConfigError, match=r"^noise_schedule is not a sampler setting of any planner family$"):
        SamplerSpec(gen_length=8, steps=4, noise_schedule="cosine")


def test_a_new_familys_setting_at_its_default_is_not_taken_for_unused(toy):
    """Only the values the old single config stored for a setting a family ignored are dropped on reading; a new
    family's setting, even at its default, is refused by a family without it (never silently ignored)."""
    llada = get_family("llada")
    with pytest.raises(ConfigError, match=r"^noise_schedule is not a LLaDA sampler setting$"):
        sampler_config(llada, **settings_for(llada, {"gen_length": 8, "steps": 8, "noise_schedule": "linear"}))


@pytest.mark.parametrize("model_type", ["llada", "Dream", "diffusion_gemma"])
def test_no_family_takes_a_setting_it_does_not_have(model_type):
    family = get_family(model_type)
    for name, value in {"noise_schedule": "cosine", "latent_tokens": 2, "latent_choice": "random"}.items():
        with pytest.raises(ConfigError, match=f"^{name} is not a {family.name} sampler setting$"):
            sampler_config(family, **{name: value})


def test_stored_settings_are_read_for_the_family():
    llada, dream = get_family("llada"), get_family("Dream")
    # Settings a family lacks are dropped only at the value that meant "unused"; any other is refused.
    own = dream.sampler_config().to_dict()
    assert settings_for(dream, OLD_DREAM) == {k: v for k, v in OLD_DREAM.items() if k in own}
    with pytest.raises(ConfigError, match="cfg_scale is not a Dream sampler setting"):
        dream.sampler_config(**settings_for(dream, {**OLD_DREAM, "cfg_scale": 1.0}))
    assert settings_for(llada, OLD_LLADA)["lookahead"] == 4 and "latent_tokens" not in settings_for(llada, OLD_LLADA)
    with pytest.raises(ConfigError, match="latent_tokens 4 drawn at random within lookahead 8"):
        settings_for(llada, {**OLD_LLADA, "lookahead": 8, "latent_choice": "random"})
    assert settings_for(llada, {**OLD_LLADA, "lookahead": 2})["lookahead"] == 2  # the nearer cut of the two


def test_old_sampler_dicts_read_as_their_familys():
    assert (
        current_sampler_dict(OLD_LLADA)
        == sampler_config(
            get_family("llada"), gen_length=64, block_length=32, steps=64, lookahead=4, hidden_layer=-1
        ).to_dict()
    )
    assert (
        current_sampler_dict(OLD_DREAM)
        == sampler_config(get_family("Dream"), gen_length=16, steps=16, top_p=0.9).to_dict()
    )
    new = sampler_config(get_family("Dream"), gen_length=16, steps=16).to_dict()
    assert current_sampler_dict(new) == new


def test_a_run_stored_before_the_split_resumes(tmp_path):
    """config.json of an eval run at fa60b19: the spec's role says latent_tokens, describe() every family's field."""
    role = {"kind": "ddlm", "model": "p", "gen_length": 64, "steps": 64, "block_length": 32, "threshold": None}

    def config(settings: dict, sampler: dict) -> dict:
        writer = {"kind": "ddlm", "model": "p", "sampler": sampler}
        return {"spec": {"kind": "ddlm", "executor": {**role, **settings}}, "pipeline": {"executor": writer}}

    old = config({"cache": "none", "latent_tokens": 4}, OLD_LLADA)
    (tmp_path / "config.json").write_text(json.dumps(old))
    new = config({"cache": "none", "lookahead": 4}, current_sampler_dict(OLD_LLADA))
    assert check_run_config(tmp_path, new) is not None
    other = json.loads(json.dumps(new))
    other["pipeline"]["executor"]["sampler"]["lookahead"] = 5
    with pytest.raises(ConfigError, match=r"pipeline\.executor\.sampler\.lookahead: 4 there, 5 now"):
        check_run_config(tmp_path, other)


def test_a_latent_cache_built_before_the_split_is_still_this_specs(tmp_path):
    """Its spec.json stored every family's sampler fields; the same settings today write only LLaDA's."""
    spec = {"version": 2, "planner_weights": "w", "planner_config": {}, "planner_template": "{question}"}
    (tmp_path / "spec.json").write_text(json.dumps({**spec, "sampler": OLD_LLADA}))
    opened = LatentCache.open(tmp_path, {**spec, "sampler": current_sampler_dict(OLD_LLADA)})
    assert opened.spec["sampler"] == OLD_LLADA  # kept as stored: a run's identity hashes it, so the run resumes
    with pytest.raises(ConfigError, match="built with a different 'sampler'"):
        LatentCache.open(tmp_path, {**spec, "sampler": {**current_sampler_dict(OLD_LLADA), "lookahead": 5}})
