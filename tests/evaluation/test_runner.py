"""The runner: every item graded and written once, resumable after a kill, refusing a changed configuration, and
data-parallel shards that merge into exactly what one process writes.

The fakes defined here (deterministic pipeline, examples) are shared by the report, diagnose and CLI tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from latent_darm.errors import ConfigError, DataError
from latent_darm.evaluation.benchmarks import Example
from latent_darm.evaluation.runner import (
    CONFIG_FILE,
    RESULTS_FILE,
    evaluate,
    load_results,
    read_results,
    shard_items,
    summarize,
)
from latent_darm.pipelines.base import Accounting, Pipeline, PipelineResult, ProgressCallback

# ----------------------------------------------------------------------------------------------------
# Fakes
# ----------------------------------------------------------------------------------------------------


def make_examples(n: int, *, levels: bool = False) -> list[Example]:
    """``q{i}``: "What is i + 1?" with gold i + 1; with ``levels``, meta level 1 + i % 3."""
    return [
        Example(f"q{i}", f"What is {i} + 1?", str(i + 1), "integer", {"level": 1 + i % 3} if levels else {})
        for i in range(n)
    ]


def number_in(question: str) -> int:
    return int(question.split()[2])


def right_unless_multiple_of_three(question: str) -> bool:
    return number_in(question) % 3 != 0


class Killed(RuntimeError):
    """What a fake pipeline raises to simulate a process killed mid-run."""


@dataclass
class FakePipeline(Pipeline):
    """Answers ``\\boxed{i+1}`` when ``is_right(question)``, else a wrong number; costs are a function of i.

    ``fail_after=k`` raises :class:`Killed` on the first call made after k questions have been answered.
    ``calls`` records every question it was asked, to prove nothing is recomputed.
    """

    setting: str = "a"
    is_right: Callable[[str], bool] = right_unless_multiple_of_three
    fail_after: int | None = None
    calls: list[str] = field(default_factory=list)
    name: str = "fake"

    def run(
        self,
        questions: Sequence[str],
        answer_type: str,
        *,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[PipelineResult]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Killed(f"killed after {len(self.calls)} questions")
        self.calls.extend(questions)
        results = []
        for question in questions:
            i = number_in(question)
            answer = i + 1 if self.is_right(question) else i + 100
            accounting = Accounting(
                planner_tokens=10 + i,
                executor_tokens=2 + i % 2,
                planner_forward_passes=10 + i,
                executor_forward_passes=3,
                seconds=0.25 * (1 + i % 2),
            )
            results.append(PipelineResult(question, f"So \\boxed{{{answer}}}.", f"plan {i}", accounting))
        return results

    def describe(self) -> dict[str, Any]:
        return {"pipeline": self.name, "setting": self.setting}


# ----------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------

CONFIG = {"benchmark": "fake", "subset": {"limit": None, "seed": None}}


def run(pipeline: FakePipeline, out: Path, n: int = 10, **kwargs):
    kwargs.setdefault("config", CONFIG)
    return evaluate(pipeline, make_examples(n), out, batch_size=kwargs.pop("batch_size", 3), progress=False, **kwargs)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_graded_line_per_item_with_the_papers_accounting(tmp_path):
    summary = run(FakePipeline(), tmp_path)
    records = lines(tmp_path / RESULTS_FILE)
    assert [r["id"] for r in records] == [f"q{i}" for i in range(10)]
    first = records[1]
    assert first["question"] == "What is 1 + 1?" and first["gold"] == "2" and first["plan"] == "plan 1"
    assert first["output"] == "So \\boxed{2}." and first["extracted"] == "2" and first["correct"] is True
    assert (first["planner_tokens"], first["executor_tokens"], first["total_tokens"]) == (11, 3, 14)
    assert (first["planner_forward_passes"], first["executor_forward_passes"], first["seconds"]) == (11, 3, 0.5)
    assert first["answer_type"] == "integer" and first["meta"] == {}
    assert [r["correct"] for r in records] == [i % 3 != 0 for i in range(10)]
    assert (summary.n, summary.correct, summary.computed) == (10, 6, 10)
    assert summary.mean_planner_tokens == pytest.approx(sum(10 + i for i in range(10)) / 10)
    assert summary.mean_total_tokens == pytest.approx(summary.mean_planner_tokens + 2.5)
    assert summary.seconds_per_question == pytest.approx(0.375)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["pipeline"] == {"pipeline": "fake", "setting": "a"} and config["benchmark"] == "fake"
    assert "grader" in config["grading"]
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy"] == pytest.approx(0.6)


def test_resume_after_a_kill_recomputes_nothing_and_loses_nothing(tmp_path):
    killed = FakePipeline(fail_after=6)
    with pytest.raises(Killed):
        run(killed, tmp_path)
    assert killed.calls == [f"What is {i} + 1?" for i in range(6)]
    assert len(lines(tmp_path / RESULTS_FILE)) == 6

    resumed = FakePipeline()
    summary = run(resumed, tmp_path)
    assert resumed.calls == [f"What is {i} + 1?" for i in range(6, 10)]
    assert (summary.n, summary.computed) == (10, 4)
    assert [r["id"] for r in lines(tmp_path / RESULTS_FILE)] == [f"q{i}" for i in range(10)]

    again = FakePipeline()
    assert run(again, tmp_path).computed == 0 and again.calls == []


def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    with pytest.raises(Killed):
        run(FakePipeline(fail_after=3), tmp_path)
    path = tmp_path / RESULTS_FILE
    whole = path.read_text()
    path.write_text(whole[: len(whole) - 25])  # the kill hit while the third line was being written
    assert [r["id"] for r in read_results(path)] == ["q0", "q1"]

    resumed = FakePipeline()
    run(resumed, tmp_path)
    assert resumed.calls[0] == "What is 2 + 1?"
    records = lines(path)  # every line parses: the torn tail was cut before appending
    assert [r["id"] for r in records] == [f"q{i}" for i in range(10)]


def test_an_unparsable_last_line_ending_in_a_newline_is_also_dropped(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text('{"id": "a"}\n{"id": "b", "out\n')
    assert read_results(path, repair=True) == [{"id": "a"}]
    assert path.read_text() == '{"id": "a"}\n'


def test_bad_lines_before_the_end_are_set_aside_and_recomputed_to_the_uninterrupted_results(tmp_path, capsys):
    run(FakePipeline(), tmp_path / "straight")
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run(FakePipeline(fail_after=6), out)
    path = out / RESULTS_FILE
    rows = path.read_text().splitlines(keepends=True)
    rows[1], rows[3] = "{broken\n", '{"no_id": 1}\n'
    path.write_text("".join(rows))
    before = path.read_bytes()
    assert [r["id"] for r in read_results(path)] == ["q0", "q2", "q4", "q5"]
    assert path.read_bytes() == before  # reading alone never writes, but says what it skipped (report, diagnose)
    assert "results.jsonl: skipped 2 unreadable line(s) (line 2: malformed JSON)" in capsys.readouterr().err

    resumed = FakePipeline()
    summary = run(resumed, out)
    assert resumed.calls == [f"What is {i} + 1?" for i in (1, 3, 6, 7, 8, 9)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.jsonl: moved 2 unreadable line(s) (line 2: malformed JSON and 1 more)" in err[0]
    assert (out / "results.jsonl.bad").read_text() == '{broken\n{"no_id": 1}\n'
    straight = {r["id"]: r for r in lines(tmp_path / "straight" / RESULTS_FILE)}
    assert {r["id"]: r for r in lines(path)} == straight and len(lines(path)) == 10
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "straight")]
    assert summaries[0] == {**summaries[1], "computed": 6} and summary.computed == 6


def test_a_changed_configuration_is_refused_naming_the_first_differing_key(tmp_path):
    run(FakePipeline(), tmp_path, n=4)
    with pytest.raises(ConfigError, match=r'pipeline.setting: "a" there, "b" now') as info:
        run(FakePipeline(setting="b"), tmp_path, n=4)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"subset.limit: null there, 4 now"):
        run(FakePipeline(), tmp_path, n=4, config={**CONFIG, "subset": {"limit": 4, "seed": None}})
    with pytest.raises(ConfigError, match=r"extra: \(absent\) there"):
        run(FakePipeline(), tmp_path, n=4, config={**CONFIG, "extra": 1})


def test_a_new_label_is_not_a_new_configuration(tmp_path):
    run(FakePipeline(), tmp_path, n=4, config={**CONFIG, "label": "old"})
    pipeline = FakePipeline()
    run(pipeline, tmp_path, n=4, config={**CONFIG, "label": "new"})
    assert pipeline.calls == []
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["label"] == "new"


def test_results_without_a_config_are_refused(tmp_path):
    (tmp_path / RESULTS_FILE).write_text('{"id": "q0"}\n')
    with pytest.raises(DataError, match="has results but no config.json"):
        run(FakePipeline(), tmp_path)


def test_duplicate_example_ids_are_refused(tmp_path):
    examples = make_examples(3)
    with pytest.raises(DataError, match="example id 'q1' occurs twice"):
        evaluate(FakePipeline(), [*examples, examples[1]], tmp_path, batch_size=2, config=CONFIG, progress=False)


def test_shards_are_disjoint_and_cover_the_pending_items():
    items = make_examples(11)
    shards = [shard_items(items, rank, 3) for rank in range(3)]
    ids = sorted(e.id for shard in shards for e in shard)
    assert ids == sorted(e.id for e in items)
    assert [len(s) for s in shards] == [4, 4, 3]


def run_sharded(out: Path, world: int, pipelines: list[FakePipeline], n: int = 10) -> list:
    """``world`` ranks running concurrently, synchronised as accelerate's processes would be."""
    barrier = threading.Barrier(world)
    with ThreadPoolExecutor(world) as pool:
        futures = [
            pool.submit(run, pipelines[rank], out, n, shard=(rank, world), barrier=barrier.wait)
            for rank in range(world)
        ]
        return [future.result() for future in futures]


def test_sharded_runs_merge_into_exactly_the_single_process_results(tmp_path):
    run(FakePipeline(), tmp_path / "single")
    pipelines = [FakePipeline() for _ in range(3)]
    summaries = run_sharded(tmp_path / "sharded", 3, pipelines)
    assert sorted(q for p in pipelines for q in p.calls) == sorted(e.question for e in make_examples(10))
    assert all(p.calls for p in pipelines)
    assert not list((tmp_path / "sharded").glob("results.rank*.jsonl"))
    assert lines(tmp_path / "sharded" / RESULTS_FILE) == lines(tmp_path / "single" / RESULTS_FILE)
    assert summaries[0] == summarize(lines(tmp_path / "single" / RESULTS_FILE), computed=summaries[0].computed)


def test_sharded_resume_splits_only_the_pending_items_and_merges_leftover_rank_files(tmp_path):
    with pytest.raises(Killed):
        run(FakePipeline(fail_after=3), tmp_path, shard=(0, 2))  # the main process of a 2-process run died
    assert [r["id"] for r in read_results(tmp_path / "results.rank0.jsonl")] == ["q0", "q2", "q4"]
    pipelines = [FakePipeline() for _ in range(2)]
    run_sharded(tmp_path, 2, pipelines)
    assert sorted(len(p.calls) for p in pipelines) == [3, 4]
    assert sorted(load_results(tmp_path)) == sorted(f"q{i}" for i in range(10))
    assert [r["id"] for r in lines(tmp_path / RESULTS_FILE)] == [f"q{i}" for i in range(10)]


def test_a_second_launch_into_a_busy_directory_is_refused(tmp_path):
    class Nested(FakePipeline):
        def run(self, questions, answer_type, **kwargs):
            with pytest.raises(DataError, match="another evaluation is writing to this directory"):
                evaluate(FakePipeline(), make_examples(2), tmp_path, batch_size=2, config=CONFIG, progress=False)
            return super().run(questions, answer_type, **kwargs)

    assert run(Nested(), tmp_path, n=2).n == 2


def test_a_bad_shard_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="shard must be"):
        run(FakePipeline(), tmp_path, shard=(2, 2))
