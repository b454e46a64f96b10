"""The README's `darm demo` table must come from the default demo of this commit.

Its caption states the demo fingerprint (a hash of every setting that changes a trained model or a number in the
table, computed without training anything); when a change to the world, the models' recipes, the prompt
templates or the demo's sweep changes it, this test fails until someone reruns the demo and pastes its output.
"""

from __future__ import annotations

import re
from pathlib import Path

from latent_darm.toy.demo import demo_settings

README = Path(__file__).resolve().parents[2] / "README.md"
CAPTION = re.compile(r"demo fingerprint `([0-9a-f]{16})`")


def test_the_readme_demo_table_is_from_the_default_demo():
    found = CAPTION.findall(README.read_text(encoding="utf-8"))
    assert found, f"{README}: the `darm demo` table caption must state its demo fingerprint (demo fingerprint `...`)"
    expected = demo_settings().fingerprint()
    assert set(found) == {expected}, (
        f"the default demo's fingerprint is {expected}, but the README's `darm demo` section states {found}: a "
        "setting that changes the trained models or the table has changed. Rerun `darm demo --levels` with an "
        "empty cache and paste its table, fingerprint and figures into the README's `darm demo` section."
    )


def test_the_fingerprint_follows_every_setting_that_changes_the_table():
    settings = demo_settings()
    assert settings.fingerprint() == demo_settings().fingerprint()
    assert demo_settings(seed=1).fingerprint() != settings.fingerprint()
    assert demo_settings(quick=True).fingerprint() != settings.fingerprint()
    from dataclasses import replace

    assert replace(settings, step_budgets=(8, 4)).fingerprint() != settings.fingerprint()
    assert replace(settings, projector=replace(settings.projector, lr=5e-4)).fingerprint() != settings.fingerprint()
    world = replace(settings.world, executor=replace(settings.world.executor, steps=601))
    assert replace(settings, world=world).fingerprint() != settings.fingerprint()
    # How often the trainer logs or how many checkpoints it keeps changes no weight and no number.
    cosmetic = replace(settings, projector=replace(settings.projector, log_every=3, keep_checkpoints=5))
    assert cosmetic.fingerprint() == settings.fingerprint()
