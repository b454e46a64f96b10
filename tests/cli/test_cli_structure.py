"""The command line stays thin: every command is registered in ``cli/app.py`` (no registration by import side
effect), is named ``<command>_command`` and fits on a screen (checked with ``ast``: domain logic lives below the CLI);
``darm eval`` and ``darm solve`` take the same pipeline options from one definition."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import typer

import latent_darm.cli
from latent_darm.cli.app import COMMANDS, app
from latent_darm.cli.options import PipelineOptions

CLI = Path(latent_darm.cli.__file__).parent
MAX_LINES = 60


def _functions() -> dict[str, tuple[Path, ast.FunctionDef]]:
    found = {}
    for path in sorted(CLI.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = (path, node)
    return found


def test_every_command_is_registered_in_app_py_under_one_naming_convention():
    registered = {info.name: info.callback for info in app.registered_commands}
    assert registered.keys() == COMMANDS.keys()
    for name, callback in registered.items():
        assert callback.__name__ == f"{name.replace('-', '_')}_command", name
        assert callback.__module__.startswith("latent_darm.cli."), name
    # Every ``*_command`` function of cli/ is one of them: no command hides outside the list.
    commands = {name for name in _functions() if name.endswith("_command")}
    assert commands == {callback.__name__ for callback in registered.values()}


def test_no_module_but_app_py_registers_commands():
    for path in CLI.glob("*.py"):
        if path.name == "app.py":
            continue
        tree = ast.parse(path.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "latent_darm.cli.app"]
        assert not imports, f"{path.name} imports latent_darm.cli.app"
    assert not (CLI / "commands.py").exists()


def test_no_command_function_is_longer_than_a_screen():
    lengths = {
        name: node.end_lineno - node.lineno + 1  # type: ignore[operator]
        for name, (_, node) in _functions().items()
        if name.endswith("_command")
    }
    assert lengths and len(lengths) == len(COMMANDS)
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"command functions over {MAX_LINES} lines: {too_long}"


def test_eval_and_solve_take_the_same_pipeline_options():
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    shared = {field.name for field in dataclasses.fields(PipelineOptions)}
    options = {name: {p.name: p for p in commands[name].params} for name in ("eval", "solve")}
    for name in shared:
        eval_option, solve_option = options["eval"][name], options["solve"][name]
        assert eval_option.opts == solve_option.opts, name
        assert (eval_option.default, eval_option.help) == (solve_option.default, solve_option.help), name
    assert "--latent-tokens" in options["solve"]["latent_tokens"].opts  # the option solve used to lack
