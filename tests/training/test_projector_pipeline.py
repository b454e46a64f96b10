"""The projector pipeline's settings refuse what its two stages cannot run, before any model loads (the runs
themselves are covered through ``darm train-projector`` in tests/cli and the toy demo in tests/toy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latent_darm.errors import ConfigError
from latent_darm.training.projector_pipeline import LatentSource, ProjectorPipelineSettings
from latent_darm.training.projector_trainer import ProjectorTrainingConfig


def _settings(sources: tuple[LatentSource, ...], **changes: object) -> ProjectorPipelineSettings:
    return ProjectorPipelineSettings(
        "planner", "executor", Path("out"), sources, ProjectorTrainingConfig(), plan_length=8, **changes
    )


def test_a_run_needs_a_sampler_setting():
    with pytest.raises(ConfigError, match="no sampler settings"):
        _settings(())


def test_the_closed_form_map_fits_one_setting_not_a_mixture():
    sources = tuple(LatentSource(key, {"gen_length": 8}, Path(key)) for key in ("s8", "s4"))
    assert _settings(sources).sources == sources
    with pytest.raises(ConfigError, match="--init lstsq fits one sampler setting"):
        _settings(sources, init="lstsq")
