"""Chat templates are code shipped with a checkpoint: rendered in jinja's sandbox, and every way one can fail is a
one-line ConfigError naming the template file, through the Python API as through the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM


def _executor(tmp_path: Path, executor_dir: Path, template: str) -> AutoregressiveLM:
    directory = Path(shutil.copytree(executor_dir, tmp_path / "executor"))
    (directory / "chat_template.jinja").write_text(template)
    return AutoregressiveLM.from_pretrained(directory)


def test_a_template_that_tries_to_run_a_shell_command_is_stopped_by_the_sandbox(tmp_path, executor_dir):
    """The classic jinja escape (reach ``os`` through a global's ``__init__.__globals__``) must never run."""
    marker = tmp_path / "escaped"
    template = f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}{{{{ messages[0].content }}}}"
    executor = _executor(tmp_path, executor_dir, template)
    with pytest.raises(ConfigError, match=r"chat_template\.jinja: the chat template was stopped by jinja's sandbox"):
        executor.chat_ids("What is 2 + 2?")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% if messages %}{{ messages[0].content }", r"has a syntax error at line 1"),
        ("{{ raise_exception('user turns only') }}", r"raised TemplateError while rendering \(user turns only\)"),
        ("{{ 1 + messages[0].content }}", r"raised TypeError while rendering"),
    ],
)
def test_a_broken_template_is_one_line_naming_its_file(tmp_path, executor_dir, template, message):
    executor = _executor(tmp_path, executor_dir, template)
    with pytest.raises(ConfigError, match=rf"executor/chat_template\.jinja: the chat template {message}") as info:
        executor.generate(["What is 2 + 2?"], max_new_tokens=2)
    assert "\n" not in str(info.value)


def test_the_planner_names_its_template_file_too(tmp_path, llada_dir):
    directory = Path(shutil.copytree(llada_dir, tmp_path / "planner"))
    (directory / "chat_template.jinja").write_text("{{ raise_exception('no chat') }}")
    planner = DiffusionLM.from_pretrained(directory)
    with pytest.raises(ConfigError, match=r"planner/chat_template\.jinja: the chat template raised TemplateError"):
        planner.prompt_ids("What is 2 + 2?")
    assert planner.prompt_ids("What is 2 + 2?", chat=False)  # without the template the planner still works
