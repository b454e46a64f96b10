"""The quick toy world, built once per test session and shared by the build and demo tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from latent_darm.toy.build import WorldArtifacts, build_world
from latent_darm.toy.world import quick_config


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("toy-cache")


@pytest.fixture(scope="session")
def artifacts(toy_cache) -> WorldArtifacts:
    return build_world(quick_config(), toy_cache, progress=False)
