"""Prompt templates: the paper's structure, rendered text free of template syntax, overrides from a file."""

from __future__ import annotations

import json

import pytest

from latent_darm.errors import ConfigError
from latent_darm.pipelines.prompts import PromptTemplates, load_templates


@pytest.mark.parametrize("answer_type", ["math", "integer", "mc"])
def test_rendered_prompts_contain_no_template_syntax(answer_type):
    t = PromptTemplates()
    rendered = [
        t.planner_prompt("Q?"),
        t.text_executor_prompt("Q?", "the plan", answer_type),
        t.latent_executor_prompt("Q?", answer_type),
        t.direct_prompt("Q?", answer_type),
        t.direct_prompt("Q?", answer_type, chain_of_thought=True),
    ]
    for text in rendered:
        assert "{{" not in text and "}}" not in text and "{question}" not in text
    if answer_type != "mc":
        assert "\\boxed{}" in t.direct_prompt("Q?", answer_type)


def test_structure_follows_the_paper():
    t = PromptTemplates()
    assert t.answer_format("math") not in t.planner_prompt("Q?")
    latent = t.latent_executor_prompt("Q?", "math")
    assert latent.startswith("Q?") and latent.endswith(t.answer_format("math"))


def test_overrides_from_json_and_yaml(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"planner": "Plan: {question}"}))
    assert load_templates(path).planner_prompt("Q?") == "Plan: Q?"
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("answer_format_mc: 'Letter only.'\n")
    assert load_templates(yaml_path).direct_prompt("Q?", "mc").endswith("Letter only.")
    path.write_text(json.dumps({"plannr": "x"}))
    with pytest.raises(ConfigError, match="unknown template 'plannr'"):
        load_templates(path)
    with pytest.raises(ConfigError, match="prompt file .*missing.json"):
        load_templates(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"planner": "Hints for {question} in {language}"}, r"template 'planner': unknown placeholder \{language\}"),
        ({"direct": "{question} in \\boxed{}"}, r"template 'direct': unknown placeholder \{\} .*write \{\{ and \}\}"),
        ({"executor_latent": "{question} {"}, r"template 'executor_latent': Single '\{' encountered"),
        ({"direct": "{question.upper}"}, r"unknown placeholder \{question\.upper\}"),
        ({"direct": "{question:{width}}"}, r"template 'direct' cannot be formatted \(KeyError: 'width'\)"),
        ({"planner": "Write hints."}, r"template 'planner' has no \{question\} placeholder"),
        ({"chain_of_thought": "{answer_format}"}, r"template 'chain_of_thought' has no \{question\} placeholder"),
        ({"executor_text": "{question}\n{answer_format}"}, r"template 'executor_text' has no \{plan\} placeholder"),
    ],
)
def test_a_template_that_cannot_be_formatted_is_refused_at_load(tmp_path, overrides, message):
    """Before: an unknown placeholder was a KeyError traceback mid-run; a template without {question} sent every
    item the same prompt without a word."""
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(overrides))
    with pytest.raises(ConfigError, match=rf"prompt file .*prompts\.json: .*{message}") as info:
        load_templates(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=message):  # the Python API checks the same on construction
        PromptTemplates(**overrides)


def test_format_specs_and_literal_braces_stay_allowed():
    t = PromptTemplates(direct="{question!r} {{braces}} {answer_format}")
    assert t.direct_prompt("Q?", "math") == "'Q?' {braces} " + t.answer_format("math")
