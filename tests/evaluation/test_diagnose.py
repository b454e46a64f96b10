"""Error attribution (the paper's setups X and Y) on a constructed case with fake pipelines.

The original run fails q0, q3, q6, q9. The planner swap (X) fixes q0 and q3, the executor swap (Y) fixes q3 and
q6: q0 and q3 are the planner's (X is checked first), q6 the executor's, q9 unresolved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.diagnose import (
    EXECUTOR_SWAP,
    PLANNER_SWAP,
    attribute,
    diagnose,
    executor_swap_spec,
    planner_swap_spec,
    plot_attribution,
)
from latent_darm.evaluation.runner import evaluate
from latent_darm.pipelines.builder import build_spec
from tests.evaluation.test_report import assert_png
from tests.evaluation.test_runner import FakePipeline, Killed, make_examples, number_in

TEXT_SPEC = build_spec(pipeline="text", planner="llada", executor="llama", gen_length=64)
# build_spec reads a latent run's settings from its projector directory; this fake run has none.
LATENT_SPEC = {**TEXT_SPEC, "kind": "latent", "projector": "proj"}
FIXED_BY = {PLANNER_SWAP: {0, 3}, EXECUTOR_SWAP: {3, 6}}


def original_run(path: Path, spec: dict[str, Any] = TEXT_SPEC, label: str = "text") -> Path:
    config = {"benchmark": "fake", "spec": spec, "label": label}
    evaluate(FakePipeline(), make_examples(10), path, batch_size=4, config=config, progress=False)
    return path


class Builder:
    """Fake ``build_pipeline``: recognises which swap a spec is and answers accordingly; counts what it built."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.specs: list[dict[str, Any]] = []
        self.pipelines: list[FakePipeline] = []
        self.fail_after = fail_after

    def __call__(self, spec: dict[str, Any]) -> FakePipeline:
        self.specs.append(spec)
        setup = PLANNER_SWAP if spec["planner"]["kind"] == "arm" else EXECUTOR_SWAP
        fixed = FIXED_BY[setup]
        pipeline = FakePipeline(setting=setup, is_right=lambda q: number_in(q) in fixed, fail_after=self.fail_after)
        self.pipelines.append(pipeline)
        return pipeline


def test_attribution_rule():
    assert attribute(True, False) == "planner"
    assert attribute(True, True) == "planner"
    assert attribute(False, True) == "executor"
    assert attribute(None, True) == "executor"
    assert attribute(False, False) == "unresolved"
    assert attribute(None, None) == "unresolved"


def test_swapped_specs_change_only_the_swapped_role():
    x = planner_swap_spec(TEXT_SPEC)
    assert x is not None and x["executor"] == TEXT_SPEC["executor"]
    assert x["planner"] == {"kind": "arm", "model": "llama", "max_new_tokens": 64, "repetition_penalty": 1.0}
    y = executor_swap_spec(TEXT_SPEC)
    assert y is not None and y["planner"] == TEXT_SPEC["planner"]
    assert y["executor"] == {
        "kind": "ddlm",
        "model": "llada",
        "gen_length": 32,
        "steps": 32,
        "block_length": 32,
        "threshold": None,
        "cache": "none",
    }
    assert planner_swap_spec(TEXT_SPEC, "qwen")["planner"]["model"] == "qwen"
    y = executor_swap_spec(TEXT_SPEC, "dream", gen_length=48)
    assert (y["executor"]["model"], y["executor"]["gen_length"], y["executor"]["block_length"]) == ("dream", 48, 48)


def test_latent_runs_are_swapped_through_text_space():
    for swapped in (planner_swap_spec(LATENT_SPEC), executor_swap_spec(LATENT_SPEC)):
        assert swapped["kind"] == "text" and swapped["projector"] is None and swapped["latent_noise"] == 0.0


def test_runs_without_a_swappable_role_are_refused(tmp_path):
    arm = original_run(tmp_path / "arm", build_spec(pipeline="arm", executor="llama"))
    with pytest.raises(ConfigError, match="no diffusion planner or autoregressive executor to swap"):
        diagnose(arm, Builder(), progress=False)
    ddlm_ddlm = build_spec(pipeline="text", planner="llada", executor="llada", executor_kind="ddlm")
    with pytest.raises(ConfigError, match="pass --ar-planner"):
        planner_swap_spec(ddlm_ddlm)
    assert executor_swap_spec(ddlm_ddlm) is None
    (tmp_path / "plain").mkdir()
    evaluate(FakePipeline(), make_examples(2), tmp_path / "plain", batch_size=2, config={}, progress=False)
    with pytest.raises(DataError, match="config.json has no 'spec'"):
        diagnose(tmp_path / "plain", Builder(), progress=False)


def test_diagnose_attributes_each_failure_and_writes_its_files(tmp_path):
    run = original_run(tmp_path / "run")
    builder = Builder()
    diagnosis = diagnose(run, builder, runtime={"device": "cpu"}, batch_size=3, progress=False)

    assert [spec["device"] for spec in builder.specs] == ["cpu", "cpu"]
    assert [sorted(p.calls) for p in builder.pipelines] == [[f"What is {i} + 1?" for i in (0, 3, 6, 9)]] * 2
    items = {item["id"]: item for item in diagnosis.items}
    assert {k: v["attribution"] for k, v in items.items()} == {
        "q0": "planner",
        "q3": "planner",
        "q6": "executor",
        "q9": "unresolved",
    }
    assert items["q6"][PLANNER_SWAP] == {"correct": False, "extracted": "106"}
    assert items["q6"][EXECUTOR_SWAP] == {"correct": True, "extracted": "7"}

    lines = [json.loads(line) for line in (run / "diagnosis.jsonl").read_text().splitlines()]
    assert lines == diagnosis.items
    summary = json.loads((run / "diagnosis.json").read_text())
    assert summary["counts"] == {"planner": 2, "executor": 1, "unresolved": 1}
    assert summary["shares_of_failures"] == {"planner": 0.5, "executor": 0.25, "unresolved": 0.25}
    assert summary["rates_of_all_items"]["planner"] == pytest.approx(0.2)
    assert (summary["n_items"], summary["n_failed"], summary["fixed_by_both"]) == (10, 4, 1)
    assert summary["fixed_by"] == {PLANNER_SWAP: 2, EXECUTOR_SWAP: 2}
    assert summary["setups"][PLANNER_SWAP]["spec"]["planner"]["kind"] == "arm"
    assert "device" not in summary["setups"][PLANNER_SWAP]["spec"]

    again = Builder()
    assert diagnose(run, again, progress=False).items == diagnosis.items
    assert again.specs == []  # finished swaps are read back without building a pipeline


def test_diagnose_resumes_a_killed_swap_without_redoing_items(tmp_path):
    run = original_run(tmp_path / "run")
    killed = Builder(fail_after=2)
    with pytest.raises(Killed):
        diagnose(run, killed, batch_size=2, progress=False)
    resumed = Builder()
    diagnosis = diagnose(run, resumed, batch_size=2, progress=False)
    assert sorted(resumed.pipelines[0].calls) == ["What is 6 + 1?", "What is 9 + 1?"]
    assert len(resumed.pipelines[1].calls) == 4
    assert diagnosis.counts() == {"planner": 2, "executor": 1, "unresolved": 1}


def test_a_changed_swap_setting_is_refused(tmp_path):
    run = original_run(tmp_path / "run")
    diagnose(run, Builder(), progress=False)
    builder = Builder()
    with pytest.raises(ConfigError, match=r"spec.planner.model: \"llama\" there, \"qwen\" now"):
        diagnose(run, builder, ar_planner="qwen", progress=False)
    assert builder.specs == []


def test_attribution_chart_is_a_png(tmp_path):
    text = diagnose(original_run(tmp_path / "text"), Builder(), progress=False)
    latent = diagnose(original_run(tmp_path / "latent", LATENT_SPEC, "latent"), Builder(), progress=False)
    plot_attribution([text, latent], tmp_path / "diagnosis.png")
    assert_png(tmp_path / "diagnosis.png")


class _Writer:
    """A writer stub: records its prompts; answers ``\\boxed{n}`` with n found after "PLAN " in the prompt."""

    def __init__(self, kind: str) -> None:
        self.kind, self.prompts = kind, []

    def write(self, prompts, batch_size):
        from latent_darm.pipelines.writers import Written

        self.prompts += list(prompts)
        if self.kind == "arm":
            raise AssertionError("setup Y must not sample a new plan")
        return [Written(f"\\boxed{{{p.split('PLAN ')[1].split()[0]}}}", 4, 4, 0.0) for p in prompts]

    def render(self, prompt):
        return prompt

    def describe(self):
        return {"kind": self.kind}


def test_setup_y_reads_the_recorded_plan_instead_of_sampling_a_new_one(tmp_path):
    """The original run's plans say the right answer; a re-sampled plan (the planner stub) would raise."""
    from latent_darm.pipelines.text import TextPipeline

    run = original_run(tmp_path / "text")
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    for record in records:
        record["plan"] = f"PLAN {int(record['gold'])} stored"
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    built = []

    def build(spec):
        if spec["planner"]["kind"] == "arm":
            return Builder()(spec)
        built.append(TextPipeline(_Writer("arm"), _Writer("ddlm")))
        return built[-1]

    diagnosis = diagnose(run, build, progress=False)
    failed = [r for r in records if not r["correct"]]
    assert diagnosis.specs[EXECUTOR_SWAP]["plans"] == "recorded"
    assert len(built) == 1 and not built[0].planner.prompts  # the stub planner was never asked
    assert len(built[0].executor.prompts) == len(failed)
    assert all(f"PLAN {int(r['gold'])} stored" in p for r, p in zip(failed, built[0].executor.prompts, strict=False))
    assert all(item[EXECUTOR_SWAP]["correct"] for item in diagnosis.items)
