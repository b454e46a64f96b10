"""``darm eval`` / ``darm report`` / ``darm diagnose`` end to end on local benchmark files, with the pipeline builder
replaced by fakes; every user mistake is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from latent_darm.errors import ConfigError
from latent_darm.pipelines.builder import build_spec
from latent_darm.projector.model import Projector, ProjectorConfig
from tests.evaluation.test_runner import FakePipeline, Killed, number_in

TEXT = ["--pipeline", "text", "--planner", "llada", "--executor", "llama", "--gen-length", "64"]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """gsm8k: "What is i + 1?" with gold i + 1 (#### form); math: the same with MATH levels 1 + i % 3."""
    root = tmp_path / "data"
    write_jsonl(
        root / "gsm8k" / "test.jsonl",
        [{"question": f"What is {i} + 1?", "answer": f"{i} plus one.\n#### {i + 1}"} for i in range(10)],
    )
    rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1), "level": f"Level {1 + i % 3}"} for i in range(9)]
    write_jsonl(root / "math" / "test.jsonl", rows)
    return root


class Builder:
    """Stands in for ``latent_darm.pipelines.build_pipeline``: records specs, answers like FakePipeline."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []
        self.pipelines: list[FakePipeline] = []
        self.fail_after: int | None = None

    def __call__(self, spec: dict[str, Any]) -> FakePipeline:
        self.specs.append(spec)
        kwargs: dict[str, Any] = {"setting": json.dumps({k: v for k, v in spec.items() if k != "device"})}
        if spec.get("planner") and spec["planner"]["kind"] == "arm":  # setup X of darm diagnose fixes q0 and q3
            kwargs["is_right"] = lambda q: number_in(q) in (0, 3)
        pipeline = FakePipeline(fail_after=self.fail_after, **kwargs)
        self.pipelines.append(pipeline)
        return pipeline


@pytest.fixture
def builder(monkeypatch) -> Builder:
    """The commands import ``build_pipeline`` from ``latent_darm.pipelines.factory`` when they run; a stand-in
    module keeps these tests independent of model code."""
    fake = Builder()
    monkeypatch.setitem(sys.modules, "latent_darm.pipelines.factory", SimpleNamespace(build_pipeline=fake))
    return fake


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_eval_runs_grades_and_resumes(darm, builder, data_dir, tmp_path):
    out = tmp_path / "run"
    args = ["eval", *TEXT, "--benchmark", "gsm8k", "--data-dir", data_dir, "--out", out, "--no-progress"]
    code, stdout, stderr = darm(*args, "--batch-size", "4", "--device", "cpu")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["n"], summary["correct"], summary["computed"]) == (10, 6, 10)
    assert "gsm8k: accuracy 60.0% (6/10)" in stderr
    assert [r["gold"] for r in results(out)] == [str(i + 1) for i in range(10)]
    assert builder.specs[0]["device"] == "cpu"
    config = json.loads((out / "config.json").read_text())
    assert config["spec"] == build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64)
    assert config["subset"] == {"limit": None, "seed": None} and config["examples"]["n"] == 10

    code, stdout, _ = darm(*args, "--batch-size", "3")  # another batch size is the same configuration
    assert code == 0 and json.loads(stdout)["computed"] == 0 and builder.pipelines[1].calls == []


def test_an_interrupted_eval_resumes_where_it_stopped(darm, builder, data_dir, tmp_path):
    args = ["eval", *TEXT, "--benchmark", "gsm8k", "--data-dir", data_dir, "--out", tmp_path / "run"]
    builder.fail_after = 4
    with pytest.raises(Killed):
        darm(*args, "--batch-size", "2", "--no-progress")
    builder.fail_after = None
    code, stdout, _ = darm(*args, "--batch-size", "2", "--no-progress")
    assert code == 0 and json.loads(stdout)["computed"] == 6
    assert len(builder.pipelines[1].calls) == 6
    assert len(results(tmp_path / "run")) == 10


def test_subset_options_and_the_data_environment_variable(darm, builder, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_DARM_DATA", str(data_dir))
    out = tmp_path / "paper"
    code, stdout, stderr = darm("eval", *TEXT, "--benchmark", "dart2", "--paper-protocol", "--out", out)
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    assert config["subset"] == {"limit": 200, "seed": 42} and config["examples"]["n"] == 3
    assert {r["meta"]["level"] for r in results(out)} == {2}

    code, stdout, _ = darm(
        "eval", *TEXT, "--benchmark", "gsm8k", "--limit", "4", "--seed", "1", "--out", tmp_path / "s"
    )
    assert code == 0 and json.loads(stdout)["n"] == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--paper-protocol", "--limit", "5"], "--paper-protocol fixes --limit and --seed"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--gen-length", "48"], "gen_length 48 is not divisible by block_length 32"),
        (["--projector", "p"], "--projector is not used by --pipeline text"),
        (["--chain-of-thought"], "--chain-of-thought is not used by --pipeline text"),
        (["--planner-kind", "rnn"], "--planner-kind must be ddlm or arm"),
        (["--dtype", "int8"], "--dtype must be one of"),
        (["--prompts", "missing.json"], "prompt file missing.json"),
    ],
)
def test_bad_options_are_one_line_errors(darm, builder, data_dir, tmp_path, extra, message):
    args = ["eval", *TEXT, "--benchmark", "gsm8k", "--data-dir", data_dir, "--out", tmp_path / "o", *extra]
    code, _, stderr = darm(*args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert builder.specs == []


@pytest.mark.parametrize(
    ("setup", "benchmark", "message"),
    [
        (None, "nonesuch", "unknown benchmark 'nonesuch'"),
        (None, "aime24", "aime24/test.jsonl: file not found"),
        (["{broken"], "gsm8k", "gsm8k/test.jsonl:1: malformed JSON"),
        ([{"question": "q", "answer": "#### 1"}, {"answer": "#### 2"}], "gsm8k", "test.jsonl:2: missing question"),
        ([{"question": "What?", "answer": "no gold"}], "gsm8k", "test.jsonl:1: field 'answer' has no '#### <number>'"),
    ],
)
def test_bad_data_is_a_one_line_error(darm, builder, tmp_path, setup, benchmark, message):
    if setup is not None:
        write_jsonl(tmp_path / "data" / "gsm8k" / "test.jsonl", setup)
    args = ["eval", *TEXT, "--benchmark", benchmark, "--data-dir", tmp_path / "data", "--out", tmp_path / "o"]
    code, _, stderr = darm(*args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert builder.specs == []


def test_a_changed_configuration_is_refused_before_any_model_loads(darm, builder, data_dir, tmp_path):
    args = ["eval", "--benchmark", "gsm8k", "--data-dir", data_dir, "--out", tmp_path / "run", "--no-progress"]
    assert darm(*args, *TEXT)[0] == 0
    code, _, stderr = darm(*args, *TEXT[:-1], "128")
    assert code == 2 and "spec.planner.gen_length: 64 there, 128 now" in stderr
    code, _, stderr = darm(*args, *TEXT, "--limit", "5")
    assert code == 2 and "subset.limit: null there, 5 now" in stderr
    assert len(builder.specs) == 1


def test_report_and_diagnose_commands(darm, builder, data_dir, tmp_path):
    base = ["--benchmark", "gsm8k", "--data-dir", data_dir, "--no-progress"]
    assert darm("eval", *TEXT, *base, "--out", tmp_path / "text", "--label", "text plan")[0] == 0
    assert darm("eval", "--pipeline", "arm", "--executor", "llama", *base, "--out", tmp_path / "arm")[0] == 0

    code, stdout, stderr = darm("report", tmp_path / "text", tmp_path / "arm", "--out", tmp_path / "report")
    assert code == 0, stderr
    written = [Path(line) for line in stdout.splitlines()]
    assert {p.name for p in written} == {"report.md", "gsm8k.csv", "gsm8k_accuracy_vs_tokens.png"}
    assert all(p.exists() for p in written)
    assert "| text plan | 10 | 60.0 |" in (tmp_path / "report" / "report.md").read_text()

    code, stdout, stderr = darm("diagnose", tmp_path / "text", "--no-progress", "--device", "cpu")
    assert code == 0, stderr
    assert "text plan on gsm8k: 4 failed of 10; planner 2, executor 0, unresolved 2" in stderr
    assert stdout.splitlines() == [str(tmp_path / "text" / "diagnosis.json"), str(tmp_path / "text" / "diagnosis.png")]
    code, _, stderr = darm("diagnose", tmp_path / "arm", "--no-progress")
    assert code == 2 and "no diffusion planner or autoregressive executor to swap" in stderr
    code, _, stderr = darm("report", tmp_path / "nothing")
    assert code == 2 and "not a results directory" in stderr


@pytest.mark.parametrize("label", ["../../escaped", "/tmp/absolute/label", "..", "a/../../b"])
def test_a_label_never_places_files_outside_the_output_directories(darm, builder, data_dir, tmp_path, label):
    """A label is display text: eval, report and diagnose write only where --out (or the run) says."""
    work = tmp_path / "work"
    base = ["--benchmark", "gsm8k", "--data-dir", data_dir, "--no-progress", "--limit", "4"]
    before = set(tmp_path.rglob("*"))
    assert darm("eval", *TEXT, *base, "--out", work / "run", "--label", label)[0] == 0
    assert darm("report", work / "run", "--out", work / "report")[0] == 0
    code, _, stderr = darm("diagnose", work / "run", "--out", work / "chart", "--no-progress", "--device", "cpu")
    assert code == 0, stderr
    created = set(tmp_path.rglob("*")) - before - {work}  # relative escapes would land in tmp_path too
    assert created and all(work in p.parents for p in created), sorted(created)
    assert {p.relative_to(work).parts[0] for p in created} == {"run", "report", "chart"}
    assert f"| {label} |" in (work / "report" / "report.md").read_text()


def test_spec_defaults_follow_the_paper(tmp_path):
    projector = Projector(ProjectorConfig(planner_dim=8, executor_dim=8, plan_length=96)).save_pretrained(tmp_path)
    latent = build_spec(pipeline="latent", planner="p", executor="e", projector=str(projector))
    # The latent plan length defaults to the one the projector was trained on.
    assert (latent["planner"]["gen_length"], latent["planner"]["steps"], latent["planner"]["block_length"]) == (
        96,
        96,
        32,
    )
    assert latent["executor"]["max_new_tokens"] == 64 and latent["dtype"] == "float32"  # auto on CPU
    text = build_spec(pipeline="text", planner="p", executor="e", dtype="fp16")
    assert (text["planner"]["gen_length"], text["executor"]["max_new_tokens"], text["dtype"]) == (256, 32, "float16")
    assert build_spec(pipeline="arm", executor="e", chain_of_thought=True)["executor"]["max_new_tokens"] == 1024
    ddlm = build_spec(pipeline="ddlm", planner="llada")
    assert ddlm["planner"] is None and ddlm["executor"]["kind"] == "ddlm" and ddlm["executor"]["model"] == "llada"
    arm_ddlm = build_spec(pipeline="text", planner="p", executor="e", planner_kind="arm", executor_kind="ddlm")
    assert arm_ddlm["planner"] == {"kind": "arm", "model": "p", "max_new_tokens": 256, "repetition_penalty": 1.0}
    assert (arm_ddlm["executor"]["kind"], arm_ddlm["executor"]["gen_length"]) == ("ddlm", 32)
    with pytest.raises(ConfigError, match="--pipeline latent needs --projector"):
        build_spec(pipeline="latent", planner="p", executor="e")
    with pytest.raises(ConfigError, match="--pipeline must be one of"):
        build_spec(pipeline="beam", executor="e")
