"""Issue 11 items 8, 10, 11 and 18 below the CLI: weights fingerprints and the resume check, disk-full writes,
0 never standing for "the default", and the benchmark-data rule of the test suite itself."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tests.conftest as suite
from latent_darm.cli.eval import weights_of
from latent_darm.errors import ConfigError, DiskFullError
from latent_darm.evaluation.diagnose import executor_swap_spec
from latent_darm.evaluation.runner import check_run_config
from latent_darm.io import append_jsonl, atomic_write_json, on_full_disk
from latent_darm.models.fingerprint import reference_fingerprint, weights_fingerprint
from latent_darm.pipelines.builder import build_spec

# ---- item 8: weights fingerprints -----------------------------------------------------------------------------


def test_fingerprint_tells_apart_weights_of_one_architecture_and_ignores_the_location(tmp_path, executor_dir):
    copy = shutil.copytree(executor_dir, tmp_path / "copy")
    assert weights_fingerprint(copy) == weights_fingerprint(executor_dir)  # two directories, same bytes
    # Same names, shapes and file size, one weight changed: the header alone could not tell these apart.
    state = load_file(copy / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"] + 1
    save_file(state, copy / "model.safetensors", metadata={"format": "pt"})
    assert (copy / "model.safetensors").stat().st_size == (executor_dir / "model.safetensors").stat().st_size
    assert weights_fingerprint(copy) != weights_fingerprint(executor_dir)
    config = shutil.copytree(executor_dir, tmp_path / "config")
    values = json.loads((config / "config.json").read_text())
    (config / "config.json").write_text(json.dumps({**values, "num_hidden_layers": values["num_hidden_layers"] + 1}))
    assert weights_fingerprint(config) != weights_fingerprint(executor_dir)  # a layer count is part of the model


def test_fingerprint_of_sharded_checkpoints_sees_every_shard(tmp_path, sharded_llada_dir):
    copy = shutil.copytree(sharded_llada_dir, tmp_path / "sharded")
    before = weights_fingerprint(copy)
    last = sorted(copy.glob("model-*.safetensors"))[-1]
    state = load_file(last)
    name = sorted(state)[-1]
    state[name] = torch.flip(state[name], dims=[0])
    save_file(state, last, metadata={"format": "pt"})
    assert weights_fingerprint(copy) != before


def test_references_the_loaders_would_reject_have_no_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert reference_fingerprint("llada") is None  # not a path, not a hub id: the loader reports it
    assert reference_fingerprint("nobody/not-cached") is None  # a hub id not in the cache: nothing to compare yet


def test_resume_is_refused_for_other_weights_and_allowed_for_the_same(tmp_path, executor_dir):
    spec = build_spec(pipeline="arm", executor=str(executor_dir))
    config = {"benchmark": "gsm8k", "spec": spec, "weights": weights_of(spec)}
    assert set(config["weights"]) == {"executor"}
    out = tmp_path / "run"
    out.mkdir()
    atomic_write_json(out / "config.json", config)
    assert check_run_config(out, config, partial=True) is not None  # same weights: resumes
    changed = {**config, "weights": {"executor": "0123456789abcdef"}}
    with pytest.raises(ConfigError, match=r"other executor weights: .* changed since they were written"):
        check_run_config(out, changed, partial=True)
    # A directory written before fingerprints existed resumes (and gets them recorded by the runner).
    atomic_write_json(out / "config.json", {k: v for k, v in config.items() if k != "weights"})
    assert check_run_config(out, changed, partial=True) is not None


# ---- item 10: disk full ---------------------------------------------------------------------------------------


def _enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_a_one_line_error_that_says_what_was_kept(tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    append_jsonl(results, {"id": "a"})
    atomic_write_json(tmp_path / "config.json", {"v": 1})
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError, match=r"disk full while appending to .*results\.jsonl; the lines before it"):
        append_jsonl(results, {"id": "b"})
    with pytest.raises(DiskFullError, match=r"config\.json; its previous version is kept"):
        atomic_write_json(tmp_path / "config.json", {"v": 2})
    with pytest.raises(DiskFullError, match=r"new\.json; nothing was written"):
        atomic_write_json(tmp_path / "new.json", {"v": 2})
    monkeypatch.undo()
    assert (tmp_path / "config.json").read_text().count('"v": 1') == 1
    assert not (tmp_path / "new.json").exists() and not list(tmp_path.glob(".*.tmp"))


def test_one_helper_turns_every_kind_of_full_disk_into_one_error(tmp_path):
    """``on_full_disk``: Python's ENOSPC and a library's own write error become the block's message (a callable
    only called then); an inner writer's DiskFullError keeps its message unless restated; other errors pass."""
    counted: list[int] = []

    def message() -> str:
        counted.append(1)
        return "disk full while writing x; 3 kept"

    with on_full_disk(tmp_path, message):
        pass
    assert not counted
    torch_full = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    for failure in (OSError(errno.ENOSPC, "No space left on device"), torch_full):
        with (
            pytest.raises(DiskFullError, match="^disk full while writing x; 3 kept$") as caught,
            on_full_disk(tmp_path, message),
        ):
            raise failure
        assert caught.value.path == tmp_path
    inner = DiskFullError("disk full while appending to y; the lines before it are kept")
    with pytest.raises(DiskFullError, match="appending to y"), on_full_disk(tmp_path, message):
        raise inner
    with pytest.raises(DiskFullError, match="3 kept"), on_full_disk(tmp_path, message, restate=True):
        raise inner
    for other in (OSError(errno.EACCES, "Permission denied"), RuntimeError("boom"), ConfigError("bad")):
        with pytest.raises(type(other)), on_full_disk(tmp_path, message):
            raise other


# ---- item 11: 0 is a value, not "the default" -----------------------------------------------------------------


@pytest.mark.parametrize("option", ["gen_length", "steps", "max_new_tokens"])
def test_zero_counts_are_refused_not_replaced_by_defaults(option):
    with pytest.raises(ConfigError, match=rf"--{option.replace('_', '-')} must be >= 1, got 0"):
        build_spec(pipeline="text", planner="p", executor="e", **{option: 0})


def test_setup_y_refuses_a_zero_canvas():
    spec = build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64)
    with pytest.raises(ConfigError, match="--diffusion-gen-length must be >= 1, got 0"):
        executor_swap_spec(spec, "dream", gen_length=0)


def test_the_api_refuses_zero_counts(tmp_path):
    from latent_darm.api import LatentDARM

    for option in ("gen_length", "steps", "max_new_tokens"):
        with pytest.raises(ConfigError, match=f"{option} must be >= 1, got 0"):
            LatentDARM.from_pretrained("p", "e", tmp_path, **{option: 0})


# ---- item 18: the benchmark-data rule -------------------------------------------------------------------------


class _Item:
    def __init__(self, marked: bool) -> None:
        self.marked = marked

    def get_closest_marker(self, name: str) -> object:
        return object() if self.marked and name == "needs_benchmarks" else None


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_benchmark_data_skips_with_a_reason_outside_ci_and_fails_in_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setattr(suite, "BENCHMARKS", tmp_path / "nowhere")
    monkeypatch.setenv("CI", ci)
    suite.pytest_runtest_setup(_Item(marked=False))  # unmarked tests never care
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match=r"benchmark data missing: no aime24/test\.jsonl under .*nowhere"):
        suite.pytest_runtest_setup(_Item(marked=True))
    monkeypatch.setattr(suite, "BENCHMARKS", tmp_path)
    for name in suite.BENCHMARK_FILES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.jsonl").write_text("{}\n")
    suite.pytest_runtest_setup(_Item(marked=True))  # data present: runs, in CI or not


def test_the_data_tests_use_the_rule(pytestconfig):
    """The tests that read the benchmark files are marked, so the rule above applies to them."""
    from tests.evaluation import test_benchmarks, test_grading

    assert test_benchmarks.needs_data.name == test_grading.needs_data.name == "needs_benchmarks"
    assert test_benchmarks.BENCHMARKS == test_grading.BENCHMARKS == suite.BENCHMARKS
