"""``darm eval`` / ``solve`` settings from issue 13: one dtype default (``auto``), the system turn, the batch size in
the run config, and the projector's force flag."""

from __future__ import annotations

import json

import pytest
import torch

from latent_darm.cli.common import resolve_dtype
from latent_darm.errors import ConfigError, DarmError
from latent_darm.pipelines.builder import build_spec
from latent_darm.pipelines.factory import ModelCache, build_pipeline
from latent_darm.pipelines.prompts import load_templates
from tests.cli.test_eval_cli import TEXT, builder, data_dir  # noqa: F401  (fixtures)

ARM = {"pipeline": "arm", "executor": "llama"}


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_a_gpu():
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("auto", "cuda:0") == "bfloat16"
    assert build_spec(**ARM)["dtype"] == "float32"  # the default, on CPU
    assert build_spec(**ARM, device="cuda")["dtype"] == "bfloat16"
    assert build_spec(**ARM, dtype="bf16")["dtype"] == "bfloat16"
    with pytest.raises(DarmError, match="--dtype must be one of"):
        resolve_dtype("int8", "cpu")


def test_system_turn_options():
    assert "system_prompt" not in build_spec(**ARM)  # the templates' default: the authors' empty system turn
    assert build_spec(**ARM, system_prompt="Be brief.")["system_prompt"] == "Be brief."
    assert build_spec(**ARM, no_system_turn=True)["system_prompt"] is None
    with pytest.raises(ConfigError, match="--system-prompt or --no-system-turn, not both"):
        build_spec(**ARM, system_prompt="x", no_system_turn=True)


def test_the_system_turn_reaches_the_autoregressive_writers(executor_dir, llada_dir, tmp_path):
    models = ModelCache(torch.float32, "cpu")
    spec = build_spec(pipeline="text", planner=str(executor_dir), executor=str(executor_dir), planner_kind="arm")
    default = build_pipeline(spec, models)
    assert default.planner.system == default.executor.system == ""
    none = build_pipeline({**spec, "system_prompt": None}, models)
    assert none.planner.system is None and none.describe()["templates"]["system_prompt"] is None
    rendered = build_pipeline({**spec, "system_prompt": "Be brief."}, models).rendered_prompts("Q?", "math")
    assert "Be brief." in rendered["planner"] and "Be brief." in rendered["executor"]
    assert "{plan}" in rendered["executor"] and "Be brief." not in none.rendered_prompts("Q?", "math")["executor"]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"system_prompt": None}))
    assert load_templates(prompts).system_prompt is None


def test_force_projector_flag_only_for_latent():
    assert "force_projector" not in build_spec(**ARM)
    with pytest.raises(ConfigError, match="--force-projector is not used by --pipeline arm"):
        build_spec(**ARM, force_projector=True)


def test_the_flag_a_tokenizer_mismatch_suggests_exists_on_eval_and_solve():
    """The projector's refusal names ``--force-projector`` (projector/projector.py); both commands must take it."""
    import typer

    from latent_darm.cli.app import app

    registered = typer.main.get_command(app).commands
    for name in ("eval", "solve"):
        options = {opt for param in registered[name].params for opt in param.opts}
        assert "--force-projector" in options, name


def test_batch_size_is_recorded_and_a_reduced_precision_resume_keeps_it(darm, builder, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = ["eval", *TEXT, "--benchmark", "gsm8k", "--data-dir", data_dir, "--out", out, "--no-progress"]
    code, _, err = darm(*args, "--batch-size", "4", "--dtype", "bfloat16")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["batch_size"] == 4
    code, _, err = darm(*args, "--batch-size", "2", "--dtype", "bfloat16")
    assert code == 2 and "batch_size: 4 there, 2 now" in err
    code, _, err = darm(*args, "--batch-size", "4", "--dtype", "float32")
    assert code == 2 and "spec.dtype" in err


def test_a_diffusion_executor_answer_canvas_takes_the_planner_steps_at_most_one_per_position():
    """--steps is the planner's; a ddlm executor's shorter answer canvas caps it (LLaDA's schedule would give the
    extra passes nothing to reveal) instead of refusing a command that names no answer steps."""
    text = {"pipeline": "text", "planner": "p", "executor": "e", "executor_kind": "ddlm", "steps": 64}
    spec = build_spec(**text, gen_length=64, max_new_tokens=32)
    assert (spec["planner"]["steps"], spec["executor"]["steps"], spec["executor"]["gen_length"]) == (64, 32, 32)
    assert build_spec(**text, gen_length=64, max_new_tokens=128)["executor"]["steps"] == 64
    with pytest.raises(ConfigError, match="steps 64 exceeds gen_length 32"):
        build_spec(pipeline="ddlm", executor="e", steps=64, gen_length=32)
