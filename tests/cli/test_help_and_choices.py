"""``darm --help`` loads no heavy library; option choices are enums that agree with the code they feed; dtype
``auto`` means the same in every command; a command missing an optional extra says which one to install."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest

from latent_darm import extras
from latent_darm.cli.choices import Cache, Dtype, PipelineKind, Remasking
from latent_darm.cli.common import resolve_dtype
from latent_darm.dtypes import DTYPE_NAMES
from latent_darm.extras import MissingExtraError, require
from latent_darm.models.diffusion_gemma.sampler import DiffusionGemmaSamplerConfig
from latent_darm.models.dream.sampler import DreamSamplerConfig
from latent_darm.models.llada.sampler_config import LLaDASamplerConfig
from latent_darm.pipelines.builder import PIPELINES, build_spec

HEAVY = ("torch", "transformers", "accelerate", "safetensors", "matplotlib", "peft", "datasets", "math_verify")
COMMANDS = ("demo", "eval", "diagnose", "grade", "report", "solve", "train-projector", "plan", "latent-tokens")

# ``python -m latent_darm.cli.app --help`` (the module accelerate launches), then every command's --help, in one
# interpreter; prints the heavy libraries that got imported.
PROBE = """
import json, runpy, sys
sys.argv = ["latent_darm.cli.app", "--help"]
try:
    runpy.run_module("latent_darm.cli.app", run_name="__main__")
except SystemExit:
    pass
from latent_darm.cli.app import main
for command in %r:
    sys.argv = ["darm", command, "--help"]
    try:
        main()
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
"""


def test_help_imports_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (COMMANDS, HEAVY)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train-projector" in done.stdout and "--pipeline" in done.stdout  # the helps were printed
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_choices_match_what_they_feed():
    assert tuple(PipelineKind) == PIPELINES
    families = (LLaDASamplerConfig, DreamSamplerConfig, DiffusionGemmaSamplerConfig)
    hints = [typing.get_type_hints(family) for family in families]
    assert set(Cache) == {mode for hint in hints if "cache" in hint for mode in typing.get_args(hint["cache"])}
    assert set(Remasking) == {rule for hint in hints for rule in typing.get_args(hint["remasking"])}
    assert set(Dtype) == {"auto", *DTYPE_NAMES}


def test_dtype_auto_is_float32_on_cpu_and_bfloat16_on_gpu():
    assert [resolve_dtype("auto", d) for d in ("cpu", "cuda", "cuda:1")] == ["float32", "bfloat16", "bfloat16"]
    assert resolve_dtype("BF16", "cpu") == "bfloat16" and resolve_dtype("fp32", "cuda") == "float32"
    spec = build_spec(pipeline="arm", executor="e", device="cuda")
    assert spec["dtype"] == "bfloat16" and "device" not in spec  # the device resolves auto; it is not stored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--planner", "p", "--prompt", "q", "--remasking", "best"], "--remasking must be one of"),
        (["plan", "--planner", "p", "--prompt", "q", "--cache", "full"], "--cache must be one of none, prefix, dual"),
        (["solve", "q", "--pipeline", "magic"], "--pipeline must be one of arm, ddlm, text, latent; got 'magic'"),
    ],
)
def test_a_value_outside_the_choices_is_one_line(darm, args, message):
    code, _, stderr = darm(*args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(("package", "extra"), [("peft", "train"), ("datasets", "eval"), ("matplotlib", "plot")])
def test_a_missing_extra_is_named(monkeypatch, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # what an uninstalled package looks like to import
    with pytest.raises(MissingExtraError, match=rf"^--thing needs {package}, .*pip install 'latent-darm\[{extra}\]'$"):
        require(package, "--thing")
    assert extras.EXTRAS[package] == extra


def test_a_broken_dependency_of_an_extra_keeps_its_own_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)  # matplotlib is installed, but something it needs is not
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as raised:
        require("matplotlib", "a figure")
    assert not isinstance(raised.value, MissingExtraError)


def test_commands_say_which_extra_is_missing(darm, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, stderr = darm("demo", "--quick", "--out", tmp_path / "demo", "--cache-dir", tmp_path / "cache")
    assert code == 2 and "pip install 'latent-darm[plot]'" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()  # refused before building anything
