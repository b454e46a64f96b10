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
