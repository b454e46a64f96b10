"""``--chat-template``: how an autoregressive executor's prompts meet its chat template, and a finished run that
resumes without loading any model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from latent_darm.errors import ConfigError
from latent_darm.models.autoregressive_lm import AutoregressiveLM
from latent_darm.models.diffusion_lm import DiffusionLM
from latent_darm.pipelines.builder import build_spec, with_chat_template
from latent_darm.pipelines.factory import build_pipeline
from latent_darm.pipelines.spec import AutoregressiveRole, PipelineSpec

PROMPT = "What is 2 + 2?"


@pytest.fixture
def base_executor(tmp_path, executor_dir) -> Path:
    """The tiny executor without a chat template (as Gemma-3-270M base ships)."""
    directory = Path(shutil.copytree(executor_dir, tmp_path / "base-executor"))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def arm_spec(executor: Path, mode: str) -> dict[str, Any]:
    return {**build_spec(pipeline="arm", executor=str(executor), max_new_tokens=3, chat_template=mode), "device": "cpu"}


def test_none_sends_the_plain_prompt_to_an_executor_with_a_template(executor_dir, capsys):
    with_template = build_pipeline(arm_spec(executor_dir, "auto"))
    plain = build_pipeline(arm_spec(executor_dir, "none"))
    assert "<|" in with_template.writer.render(PROMPT)  # type: ignore[attr-defined]  (the chat template's markers)
    assert plain.writer.render(PROMPT) == PROMPT  # type: ignore[attr-defined]
    model: AutoregressiveLM = plain.writer.model  # type: ignore[attr-defined]
    prompt = plain.templates.direct_prompt(PROMPT, "math", False)  # type: ignore[attr-defined]
    raw = model.generate([prompt], max_new_tokens=3, chat=False)[0]
    assert plain.run([PROMPT], "math")[0].output == raw.text
    assert capsys.readouterr().err == ""  # the template exists: nothing to say


def test_auto_falls_back_to_the_plain_prompt_with_one_notice(base_executor, capsys):
    pipeline = build_pipeline(arm_spec(base_executor, "auto"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"notice: executor {base_executor}: its tokenizer has no chat")
    assert "--chat-template required" in lines[0]
    assert pipeline.writer.render(PROMPT) == PROMPT  # type: ignore[attr-defined]


def test_required_refuses_a_tokenizer_without_a_template(base_executor):
    with pytest.raises(ConfigError, match=r"no chat template, and --chat-template required"):
        build_pipeline(arm_spec(base_executor, "required"))


def test_the_mode_is_stored_only_when_not_auto_and_refused_where_it_cannot_apply(executor_dir, llada_dir):
    assert "chat_template" not in build_spec(pipeline="arm", executor=str(executor_dir))["executor"]
    stored = build_spec(pipeline="arm", executor=str(executor_dir), chat_template="required")
    assert stored["executor"]["chat_template"] == "required"
    assert PipelineSpec.from_dict(stored).executor.chat_template == "required"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"spec: executor: chat_template must be one of auto, required"):
        PipelineSpec.from_dict({**stored, "executor": {**stored["executor"], "chat_template": "always"}})
    with pytest.raises(ConfigError, match=r"--chat-template required is for an autoregressive \(arm\) executor"):
        build_spec(pipeline="ddlm", executor=str(llada_dir), gen_length=8, block_length=8, chat_template="required")
    latent = {**stored, "kind": "latent", "planner": {"kind": "ddlm", "model": str(llada_dir), "gen_length": 8,
              "steps": 8, "block_length": 8, "threshold": None}, "projector": "p", "latent_noise": 0.0}  # fmt: skip
    PipelineSpec.from_dict(latent)  # required is fine with a projector
    with pytest.raises(ConfigError, match=r"chat_template none is not for the latent pipeline"):
        PipelineSpec.from_dict({**latent, "executor": {**stored["executor"], "chat_template": "none"}})
    with pytest.raises(ConfigError, match=r"--chat-template none is not for --pipeline latent"):
        with_chat_template(AutoregressiveRole("e", 4), "none", "latent")


def eval_args(executor: Path, data: Path, out: Path, *extra: str) -> list[Any]:
    return ["eval", "--pipeline", "arm", "--executor", executor, "--benchmark", "gsm8k", "--data-dir", data, "--out",
            out, "--device", "cpu", "--max-new-tokens", "2", "--no-progress", "--batch-size", "2", *extra]  # fmt: skip


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data" / "gsm8k" / "test.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(3)))  # fmt: skip
    return tmp_path / "data"


def test_eval_required_writes_nothing_and_a_resume_cannot_change_the_mode(darm, base_executor, executor_dir, data,
                                                                          tmp_path):  # fmt: skip
    out = tmp_path / "run"
    code, _, err = darm(*eval_args(base_executor, data, out, "--chat-template", "required"))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists() or list(out.iterdir()) == []
    code, _, _ = darm(*eval_args(executor_dir, data, out, "--chat-template", "none"))
    assert code == 0
    assert json.loads((out / "config.json").read_text())["spec"]["executor"]["chat_template"] == "none"
    code, _, err = darm(*eval_args(executor_dir, data, out))  # auto now: another configuration
    assert code == 2 and "holds results of another configuration (spec" in err


def forbid_loading(monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded to report a finished run")

    monkeypatch.setattr(AutoregressiveLM, "from_pretrained", refuse)
    monkeypatch.setattr(DiffusionLM, "from_pretrained", refuse)


def test_a_finished_run_resumes_without_loading_any_model(darm, executor_dir, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, first, _ = darm(*eval_args(executor_dir, data, out))
    assert code == 0
    summary_file = json.loads((out / "summary.json").read_text())
    forbid_loading(monkeypatch)
    code, again, err = darm(*eval_args(executor_dir, data, out))
    assert code == 0, err
    before, after = json.loads(first.strip().splitlines()[-1]), json.loads(again.strip().splitlines()[-1])
    assert before["computed"] == 3 and after == {**before, "computed": 0}
    assert json.loads((out / "summary.json").read_text()) == {**summary_file, "computed": 0}
    # A configuration change is still refused, and a run missing an item still loads the model to finish it.
    code, _, err = darm(*eval_args(executor_dir, data, out, "--max-new-tokens", "3"))
    assert code == 2 and "another configuration" in err
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(AssertionError, match="a model was loaded"):
        darm(*eval_args(executor_dir, data, out))


def test_finished_summary_leaves_anything_still_to_store_or_compute_to_evaluate(tmp_path):
    from latent_darm.evaluation.benchmarks import Example
    from latent_darm.evaluation.runner import GRADING, finished_summary
    from latent_darm.io import append_jsonl, atomic_write_json

    examples = [Example(id=f"q{i}", question=f"What is {i}?", gold=str(i), answer_type="integer") for i in range(2)]
    config = {"benchmark": "b", "spec": {"kind": "arm"}, "batch_size": 2}
    atomic_write_json(tmp_path / "config.json", {**config, "pipeline": {}, "grading": GRADING, "prompt_sha256": "x"})
    append_jsonl(tmp_path / "results.jsonl", {"id": "q0", "correct": True, "executor_tokens": 4})
    assert finished_summary(tmp_path, examples, config) is None  # q1 is missing
    append_jsonl(tmp_path / "results.rank1.jsonl", {"id": "q1", "correct": False, "executor_tokens": 2})
    assert finished_summary(tmp_path, examples, config) is None  # complete, but not merged yet
    (tmp_path / "results.rank1.jsonl").rename(tmp_path / "results.jsonl.part")
    append_jsonl(tmp_path / "results.jsonl", {"id": "q1", "correct": False, "executor_tokens": 2})
    assert finished_summary(tmp_path, examples, {**config, "label": "new"}) is None  # a label to store
    assert finished_summary(tmp_path, examples, {**config, "batch_size": 4}) is None  # a setting to store
    summary = finished_summary(tmp_path, examples, config)
    assert summary is not None and (summary.n, summary.correct, summary.mean_executor_tokens) == (2, 1, 3.0)
    assert json.loads((tmp_path / "summary.json").read_text())["computed"] == 0
    atomic_write_json(tmp_path / "config.json", {**config, "pipeline": {}, "grading": {}, "prompt_sha256": "x"})
    assert finished_summary(tmp_path, examples, config) is None  # graded under other grading settings
