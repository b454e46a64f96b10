"""The variant registry: a variant registered here, in the test only, trains, decodes, is swept and reported with no
other module edited; and the built-ins keep the names, knobs and labels the results and cache are keyed by."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from latent_darm.errors import ConfigError
from latent_darm.latent_tokens import variants
from latent_darm.latent_tokens.decoding import DecodeSettings
from latent_darm.latent_tokens.patterns import Columns
from latent_darm.latent_tokens.report import markdown_table, write_report
from latent_darm.latent_tokens.settings import run_settings
from latent_darm.latent_tokens.sweep import RunSettings, run
from latent_darm.latent_tokens.tasks import encode_rows, generate_splits
from latent_darm.latent_tokens.train import HISTORY_FILE, new_model
from latent_darm.latent_tokens.variants import LATENT, DiffusionVariant, get_variant, register


def neighbour(c: Columns) -> torch.Tensor:
    """A rule no built-in has: a masked column sees the clean ones, itself and the masked column just before it."""
    return (c.k < c.clean) | (c.q == c.k) | ((c.k == c.q - 1) & (c.k >= c.clean))


TOY = DiffusionVariant(
    name="toy", label="TOY", attention=neighbour, knob="n", sweep=LATENT, default=False, color="C7", draw_order=9
)


@pytest.fixture
def toy(monkeypatch):
    """TOY registered for this test only (the registry is restored afterwards)."""
    monkeypatch.setattr(variants, "VARIANTS", dict(variants.VARIANTS))
    return register(TOY)


def test_unregistered_names_are_refused_naming_the_option():
    base = run_settings(quick=True)
    with pytest.raises(ConfigError, match="--variants: unknown variant 'toy'; expected one of mdm, sidm, scdm, ar"):
        RunSettings(world=base.world, train=base.train, variants=("toy",))
    with pytest.raises(ValueError, match="'scdm' is already registered"):
        register(replace(variants.SCDM))


def test_a_registered_variant_trains_decodes_and_is_swept_and_reported(toy, tmp_path):
    base = run_settings(quick=True)
    assert get_variant("toy") is toy and "toy" not in base.variants  # not a default: named explicitly
    # training pattern and objective: the batch carries the toy's rule over each row's clean-first columns
    pattern = toy.pattern(2, 5)
    assert pattern.tolist() == [[c == "1" for c in row] for row in ("11000", "11000", "11100", "11110", "11011")]
    world = replace(base.world, train_size=20, test_size=2)
    rows = encode_rows(world, generate_splits(world)["train"])
    mask = new_model(base.train, world.row_length).config.mask_token_id
    batch = toy.batch(rows, world.prompt_length, mask, torch.Generator().manual_seed(0))
    for b in range(len(rows)):
        clean = int((batch.input_ids[b] != mask).sum())
        assert torch.equal(batch.pattern[b], toy.pattern(clean, rows.shape[1]))
    # decoding: each pass holds the clean tokens, n = 1 latent token (while one is spare) and the decoded one
    model = new_model(base.train, world.row_length).eval()
    prompts = rows[:3, : world.prompt_length]
    out = toy.decode(model, prompts, world.answer_length, 1, DecodeSettings(), torch.Generator().manual_seed(0))
    answer = world.answer_length
    assert out.tokens == sum(world.prompt_length + s + min(1, answer - s - 1) + 1 for s in range(answer))
    # the sweep trains it into its own cache entry and evaluates it at every n; the report shows it
    train = replace(base.train, steps=2, checkpoint_every=1)
    settings = RunSettings(world=base.world, train=train, variants=("sidm", "toy"), latent_values=(0, 1, None))
    outcome = run(settings, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    history = next((tmp_path / "cache").glob(f"*/models/*/toy/{HISTORY_FILE}"))
    assert json.loads(history.read_text())["variant"] == "toy"
    rows_out = [r for r in outcome.records if r["variant"] == "toy"]
    assert [(r["knob"], r["value"], r["latent_tokens"]) for r in rows_out] == [
        ("n", "0", 0),
        ("n", "1", 1),
        ("n", "all", answer - 1),
    ]
    assert all(r["selection"] == "random order" and set(r["one_step"]) >= {"loss", "loss_none"} for r in rows_out)
    assert rows_out[0]["one_step"]["loss"] == rows_out[0]["one_step"]["loss_none"]  # n = 0: no latent token
    assert rows_out[0]["tokens_per_pass"] < rows_out[1]["tokens_per_pass"] < rows_out[2]["tokens_per_pass"]
    assert "| TOY | n=1 | random order | 1 |" in markdown_table(outcome.records)
    for path in write_report(outcome.records, tmp_path / "out", "toy"):
        assert path.stat().st_size > 0


def test_the_built_ins_keep_their_names_knobs_and_labels():
    """What results.jsonl, the cache directories and the table are keyed by must not drift with the registry."""
    base = run_settings(quick=True)
    settings = RunSettings(world=base.world, train=base.train, variants=tuple(variants.VARIANTS))
    assert settings.variants == ("mdm", "sidm", "scdm", "ar", "ar-mtp", "ar-ntp")
    assert base.variants == ("mdm", "sidm", "scdm", "ar", "ar-mtp")  # ar-ntp is the opt-in control
    assert [get_variant(v).label for v in settings.variants] == ["MDM", "SIDM", "SCDM", "AR", "AR+MTP", "AR-NTP"]
    assert settings.knobs("mdm") == [("n", None)] and settings.knobs("sidm") == [("n", 0)]
    assert settings.knobs("scdm") == [("n", v) for v in (0, 1, 2, 4, 8, None)]
    assert settings.knobs("ar") == [(None, None)] and settings.knobs("ar-ntp") == [("w", None)]
    assert settings.knobs("ar-mtp") == [("w", v) for v in (1, 2, 4, 8, None)]
    assert [len(settings.decodes(v)) for v in settings.variants] == [2, 2, 1, 1, 1, 1]


def test_the_one_step_diagnostic_runs_once_per_model_and_knob_value(monkeypatch, tmp_path):
    """SIDM is evaluated under two decoding rules, but its teacher-forced diagnostic does not depend on the rule."""
    calls: list[tuple[str, object]] = []
    original = DiffusionVariant.one_step

    def counted(self, model, rows, prompt, value, generator, batch_size=256):
        calls.append((self.name, value))
        return original(self, model, rows, prompt, value, generator, batch_size)

    monkeypatch.setattr(DiffusionVariant, "one_step", counted)
    base = run_settings(quick=True)
    train = replace(base.train, steps=2, checkpoint_every=1)
    settings = RunSettings(world=base.world, train=train, variants=("sidm", "scdm"), latent_values=(0, None))
    outcome = run(settings, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert sorted(calls, key=str) == [("scdm", 0), ("scdm", None), ("sidm", 0)]
    sidm = [r for r in outcome.records if r["variant"] == "sidm"]
    assert [r["selection"] for r in sidm] == ["random order", "top-p of all"]
    assert sidm[0]["one_step"] == sidm[1]["one_step"]
