"""The pipeline builder is the one place specs are made: the toy demo's hand-set roles come out in the JSON layout
its stored runs were keyed by (key order included), and the API builds the spec the CLI builds."""

from __future__ import annotations

import json

import pytest

from latent_darm.api import LatentDARM
from latent_darm.errors import ConfigError
from latent_darm.pipelines.builder import autoregressive_role, diffusion_role, spec_from_roles


def test_roles_made_by_hand_keep_the_layout_stored_runs_were_keyed_by(tmp_path):
    planner = diffusion_role(str(tmp_path / "planner"), 16, 8, 4, None, "none", denoise_fraction=0.5)
    executor = autoregressive_role(str(tmp_path / "executor"), 6, 1.0)
    spec = spec_from_roles("latent", planner, executor, projector=str(tmp_path / "projector"))
    # The layout the toy demo wrote by hand before the builder existed (its run directories are keyed by it).
    expected = {
        "kind": "latent",
        "planner": {
            "kind": "ddlm",
            "model": str(tmp_path / "planner"),
            "gen_length": 16,
            "steps": 8,
            "block_length": 4,
            "threshold": None,
            "cache": "none",
            "denoise_fraction": 0.5,
        },
        "executor": {
            "kind": "arm",
            "model": str(tmp_path / "executor"),
            "max_new_tokens": 6,
            "repetition_penalty": 1.0,
        },
        "projector": str(tmp_path / "projector"),
        "chain_of_thought": False,
        "latent_noise": 0.0,
        "prompts": None,
        "dtype": "float32",
    }
    assert json.dumps(spec) == json.dumps(expected)


def test_hand_made_roles_are_checked_like_the_commands_options(tmp_path):
    with pytest.raises(ConfigError, match="--max-new-tokens must be >= 1"):
        autoregressive_role("e", 0, 1.0)
    with pytest.raises(ConfigError, match="the latent pipeline needs a 'projector'"):
        spec_from_roles("latent", diffusion_role("p", 8, 8, 4, None, "none"), autoregressive_role("e", 4, 1.0))


def test_the_api_builds_its_spec_with_the_builder(monkeypatch, tmp_path):
    seen = {}

    def spy(**options):
        seen.update(options)
        raise ConfigError("stop here")

    monkeypatch.setattr("latent_darm.api.pipeline_spec", spy)
    with pytest.raises(ConfigError, match="stop here"):
        LatentDARM.from_pretrained("p", "e", tmp_path, steps=4, force=True)
    assert seen["pipeline"] == "latent" and seen["steps"] == 4 and seen["force_projector"] is True
