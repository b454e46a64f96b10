"""Soft-token placements (prefix, inline, prefix-cue): where the executor reads them at inference, the same rows
and label alignment in projector training, and the setting's round trip through a saved projector."""

from __future__ import annotations

import json

import pytest
import torch

from latent_darm.errors import CheckpointError, ConfigError
from latent_darm.models.splice import PLACEMENTS, PLAN_CUE, PLAN_MARKER
from latent_darm.pipelines.prompts import PromptTemplates
from latent_darm.projector.model import Projector, ProjectorConfig
from latent_darm.training.data import TrainingExample
from latent_darm.training.projector_step import IGNORE_INDEX, build_batch, encode_examples
from tests.projector.test_splice import executor, greedy_by_recomputation, identity, plan_ids, soft_tokens  # noqa: F401

TEMPLATES = PromptTemplates()
QUESTION = "What is 2 + 3?"


def test_prefix_cue_puts_the_cue_between_the_soft_tokens_and_the_chat_prompt(executor):  # noqa: F811
    prompt = TEMPLATES.soft_token_prompt(QUESTION, "integer", "prefix-cue")
    before, after = executor.plan_segments(prompt, "prefix-cue")
    cue = executor.tokenizer(PLAN_CUE, add_special_tokens=False)["input_ids"]
    chat = executor.chat_ids(prompt)
    assert before == [] and after == cue + chat
    assert chat[0] == executor.tokenizer.bos_token_id  # the cue comes before BOS, right after the soft tokens
    assert executor.plan_segments(prompt, "prefix") == ([], chat)


def test_inline_uses_the_text_pipelines_plan_slot(executor):  # noqa: F811
    prompt = TEMPLATES.soft_token_prompt(QUESTION, "integer", "inline")
    assert prompt == TEMPLATES.text_executor_prompt(QUESTION, PLAN_MARKER, "integer")
    before, after = executor.plan_segments(prompt, "inline")
    text_before, _, text_after = executor.rendered_prompt(prompt).partition(PLAN_MARKER)
    assert executor.tokenizer.decode(before) == text_before and text_before.rstrip().endswith("Plan:")
    assert executor.tokenizer.decode(after) == text_after and text_after.lstrip().startswith("Question: " + QUESTION)
    # a latent template that holds the marker itself wins; the prefix placements never see the text template
    own = PromptTemplates(executor_latent=f"Hints {PLAN_MARKER} then {{question}}")
    assert own.soft_token_prompt(QUESTION, "integer", "inline") == f"Hints {PLAN_MARKER} then {QUESTION}"
    for placement in ("prefix", "prefix-cue"):
        assert TEMPLATES.soft_token_prompt(QUESTION, "integer", placement) == TEMPLATES.latent_executor_prompt(
            QUESTION, "integer"
        )


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_generation_reads_the_soft_tokens_at_their_placement(executor, identity, placement):  # noqa: F811
    prompt = TEMPLATES.soft_token_prompt(QUESTION, "integer", placement)
    before, after = executor.plan_segments(prompt, placement)
    plan = plan_ids(5, 11)
    soft = soft_tokens(executor, identity, plan)
    out = executor.generate_from_embeddings([soft], [prompt], placement=placement, max_new_tokens=5)
    assert out[0].token_ids == greedy_by_recomputation(executor, before, plan, after, 5, 1.0)


def test_an_unknown_placement_is_one_error_from_segments_and_generation(executor, identity):  # noqa: F811
    """``plan_segments`` is the one check (generation goes through it before decoding anything)."""
    prompt = TEMPLATES.soft_token_prompt(QUESTION, "integer", "prefix")
    soft = soft_tokens(executor, identity, plan_ids(5, 11))
    refusal = r"^placement must be one of prefix, inline, prefix-cue, got 'suffix'$"
    with pytest.raises(ConfigError, match=refusal):
        executor.plan_segments(prompt, "suffix")
    with pytest.raises(ConfigError, match=refusal):
        executor.generate_from_embeddings([soft, soft], [prompt, prompt], placement="suffix", max_new_tokens=5)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_training_rows_and_labels_align_with_the_placement(executor, placement):  # noqa: F811
    examples = [
        TrainingExample("a", QUESTION, "5", "integer", "t"),
        TrainingExample("b", "What is 10 + 20 + 30?", "60", "integer", "t"),
    ]
    length = 4
    encoded = encode_examples(executor, examples, TEMPLATES, placement, length)
    soft = torch.randn(2, length, executor.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = build_batch(executor, soft, encoded)
    for row, item in enumerate(encoded):
        prompt = TEMPLATES.soft_token_prompt(item.example.question, "integer", placement)
        assert (list(item.before), list(item.after)) == executor.plan_segments(prompt, placement)
        a, n = len(item.before), len(item.before) + length + len(item.after)
        embeds = batch.inputs_embeds[row]
        ids = [*item.before, *item.after, *item.target]
        expected = executor.embed(ids)
        assert torch.equal(embeds[a : a + length], soft[row])  # the soft tokens at their slots
        assert torch.equal(embeds[:a], expected[:a])  # the text before them (inline only)
        assert torch.equal(embeds[a + length : n + len(item.target)], expected[a:])  # then the prompt, the target
        labels = batch.labels[row].tolist()
        assert labels[:n] == [IGNORE_INDEX] * n and labels[n : n + len(item.target)] == list(item.target)
        assert batch.position_ids[row, : n + len(item.target)].tolist() == list(range(n + len(item.target)))


def test_placement_round_trips_and_old_projectors_load_as_prefix(tmp_path):
    for placement in PLACEMENTS:
        Projector(ProjectorConfig(8, 6, hidden_dim=4, placement=placement)).save_pretrained(tmp_path / placement)
        assert Projector.from_pretrained(tmp_path / placement).config.placement == placement
    old = tmp_path / "old"
    Projector(ProjectorConfig(8, 6, hidden_dim=4)).save_pretrained(old)
    values = json.loads((old / "config.json").read_text())
    del values["placement"]  # saved before the setting existed
    (old / "config.json").write_text(json.dumps(values))
    assert Projector.from_pretrained(old).config.placement == "prefix"
    values["placement"] = "suffix"
    (old / "config.json").write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match="placement must be one of prefix, inline, prefix-cue"):
        Projector.stored_config(old)
