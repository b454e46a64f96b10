"""Benchmark registry and loader: real-file counts and golds, the subset protocol, hub rows, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latent_darm.errors import DataError
from latent_darm.evaluation import benchmarks
from latent_darm.evaluation.benchmarks import (
    PAPER_PROTOCOL,
    BenchmarkSpec,
    Example,
    benchmark_names,
    get_benchmark,
    load_benchmark,
    load_training_split,
    register_benchmark,
    select_subset,
)
from tests.conftest import BENCHMARKS, needs_benchmarks

needs_data = needs_benchmarks

COUNTS = {
    "aime24": 30,
    "amc23": 40,
    "gsm8k": 1319,
    "math": 5000,
    "math500": 500,
    "minerva_math": 272,
    "mmlu_stem": 3018,
    "olympiadbench": 675,
}


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    """Each test says where data comes from; the caller's LATENT_DARM_DATA must not leak in."""
    monkeypatch.delenv(benchmarks.DATA_ENV, raising=False)


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_registry_has_the_paper_benchmarks():
    expected = {"arc_easy", "arc_challenge", "mmlu", "mmlu_stem", "math", "math500", "gsm8k", "aime24", "amc23"}
    expected |= {"minerva_math", "olympiadbench"} | {f"dart{k}" for k in range(1, 6)}
    assert expected <= set(benchmark_names())
    assert get_benchmark("arc_challenge").hf_id == "allenai/ai2_arc"
    assert get_benchmark("arc_challenge").hf_configs == ("ARC-Challenge",)
    assert get_benchmark("mmlu").hf_configs == ("all",) and get_benchmark("mmlu").answer_type == "mc"
    assert get_benchmark("dart5").hf_id == "hkust-nlp/dart-math-pool-math"
    assert PAPER_PROTOCOL == {"seed": 42, "limit": 200}


@needs_data
@pytest.mark.parametrize(("name", "count"), sorted(COUNTS.items()))
def test_real_files_load_completely_with_unique_ids(name, count):
    examples = load_benchmark(name, data_dir=BENCHMARKS)
    assert len(examples) == count
    assert len({example.id for example in examples}) == count
    assert all(example.question.strip() and example.gold.strip() for example in examples)
    assert {example.answer_type for example in examples} == {get_benchmark(name).answer_type}


@needs_data
def test_golds_come_from_the_right_fields():
    by_name = {name: load_benchmark(name, data_dir=BENCHMARKS, limit=3) for name in COUNTS}
    assert by_name["gsm8k"][0].gold == "18" and by_name["gsm8k"][0].id == "0"
    assert by_name["math"][0].gold == "2" and by_name["math"][0].meta["level"] == 3
    assert by_name["math500"][0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert by_name["aime24"][0].gold == "204" and by_name["aime24"][0].id == "60"
    assert by_name["amc23"][0].gold == "27"  # stored as 27.0
    assert by_name["minerva_math"][1].gold == "4.5e33"  # last \boxed{} of the solution
    assert by_name["olympiadbench"][0].gold == "2" and by_name["olympiadbench"][0].id == "1606"
    mc = by_name["mmlu_stem"][0]
    assert mc.gold == "C" and mc.answer_type == "mc" and mc.id == "1"  # no id in the file: line number
    assert mc.question.splitlines()[1:] == [
        "A. maintain the population at a point corresponding to the midpoint of its logistic curve",
        "B. opt for zero population control once the K value of the curve has been reached",
        "C. reduce the carrying capacity cif the environment to lower the K value",
        "D. increase the mortality rate",
    ]


@needs_data
def test_olympiad_multi_answers_are_joined_without_dollars():
    golds = {example.id: example.gold for example in load_benchmark("olympiadbench", data_dir=BENCHMARKS)}
    assert not any("$" in gold for gold in golds.values())
    assert "69, 84" in golds.values()


@needs_data
def test_dart_levels_partition_math():
    full = load_benchmark("math", data_dir=BENCHMARKS)
    levels = [load_benchmark(f"dart{k}", data_dir=BENCHMARKS) for k in range(1, 6)]
    assert [len(level) for level in levels] == [437, 894, 1131, 1214, 1324]
    assert sorted(e.id for level in levels for e in level) == sorted(e.id for e in full)
    for k, level in enumerate(levels, start=1):
        assert {e.meta["level"] for e in level} == {k}


@needs_data
def test_subsets_are_deterministic_and_follow_the_protocol(monkeypatch):
    full = load_benchmark("gsm8k", data_dir=BENCHMARKS)
    assert load_benchmark("gsm8k", data_dir=BENCHMARKS, limit=5) == full[:5]
    paper = load_benchmark("gsm8k", data_dir=BENCHMARKS, **PAPER_PROTOCOL)
    assert paper == [full[i] for i in _shuffled(len(full), 42)[:200]]
    assert paper == load_benchmark("gsm8k", data_dir=BENCHMARKS, seed=42, limit=200)
    assert paper != load_benchmark("gsm8k", data_dir=BENCHMARKS, seed=43, limit=200)
    assert len(load_benchmark("aime24", data_dir=BENCHMARKS, **PAPER_PROTOCOL)) == 30  # fewer rows than the limit
    monkeypatch.setenv(benchmarks.DATA_ENV, str(BENCHMARKS))
    assert load_benchmark("gsm8k", **PAPER_PROTOCOL) == paper


@pytest.mark.parametrize("seed", [-1, 2**32, 10**30, True, "42"])
def test_a_seed_the_shuffle_cannot_take_is_one_line(seed):
    """Before: "expected non-negative integer" or an overflow from deep inside datasets/numpy."""
    examples = [Example(f"q{i}", f"What is {i}?", str(i), "integer") for i in range(3)]
    with pytest.raises(DataError, match=r"seed must be an integer from 0 to 4294967295"):
        select_subset(examples, seed=seed)
    assert len(select_subset(examples, seed=2**32 - 1)) == 3


def test_examples_are_frozen_and_hashable():
    example = Example("1", "What is 1+1?", "2", "math", {"level": 1})
    with pytest.raises(AttributeError):
        example.gold = "3"  # type: ignore[misc]
    assert hash(example) == hash(Example("1", "What is 1+1?", "2", "math", {"level": 2}))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"problem": "1+1?", "answer": "2"}', "{not json"], "test.jsonl:2: malformed JSON"),
        (['{"problem": "1+1?", "answer": "2"}', '["a list"]'], "test.jsonl:2: expected a JSON object"),
        ([{"problem": "1+1?"}], "test.jsonl:1: missing gold answer"),
        ([{"answer": "2"}], "test.jsonl:1: missing question"),
        ([{"problem": "  ", "answer": "2"}], "test.jsonl:1: missing question"),
        ([], "no rows for benchmark 'math500'"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_file_and_line(tmp_path, rows, message):
    write_jsonl(tmp_path / "math500" / "test.jsonl", rows)
    with pytest.raises(DataError, match=message) as info:
        load_benchmark("math500", data_dir=tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("gsm8k", {"question": "q", "answer": "no hashes"}, "no '#### <number>' gold"),
        ("mmlu_stem", {"question": "q", "choices": ["a", "b"], "answer": 5}, "out of range for 2 choices"),
        ("mmlu_stem", {"question": "q", "answer": 0}, "missing choices"),
        ("olympiadbench", {"question": "q", "final_answer": []}, "field 'final_answer'"),
    ],
)
def test_layout_specific_row_errors(tmp_path, name, row, message):
    write_jsonl(tmp_path / name / "test.jsonl", [row])
    with pytest.raises(DataError, match=f"test.jsonl:1: .*{message}"):
        load_benchmark(name, data_dir=tmp_path)


def test_choices_written_as_text_and_letter_answers(tmp_path):
    write_jsonl(
        tmp_path / "mmlu_stem" / "test.jsonl", [{"question": "Pick", "choices": "['x', 'y', 'z']", "answer": "c"}]
    )
    (example,) = load_benchmark("mmlu_stem", data_dir=tmp_path)
    assert example.gold == "C" and example.question == "Pick\nA. x\nB. y\nC. z"


def test_missing_file_and_unknown_benchmark(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"aime24/test.jsonl: file not found") as info:
        load_benchmark("aime24", data_dir=tmp_path)
    assert "HuggingFaceH4/aime_2024" in str(info.value)
    monkeypatch.setenv(benchmarks.DATA_ENV, str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        load_benchmark("gsm8k")
    with pytest.raises(DataError, match=r"unknown benchmark 'gsm9k'; known: .*gsm8k.*math500"):
        load_benchmark("gsm9k")
    with pytest.raises(DataError, match="limit must be >= 0"):
        load_benchmark("gsm8k", data_dir=tmp_path, limit=-1)


def test_hub_failures_are_one_line_data_errors(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_benchmark("gsm8k")
    assert str(info.value) == (
        "benchmark 'gsm8k': cannot load openai/gsm8k split test from the Hugging Face hub: "
        "Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)"
    )


def fake_hub(monkeypatch, rows_by_config: dict) -> list:
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return rows_by_config[name]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_aime_keeps_only_2024(monkeypatch):
    rows = [{"id": i, "problem": f"p{i}", "answer": str(i), "year": str(year)} for i, year in enumerate([2023, 2024])]
    rows.append({"ID": "1983-1", "Problem": "old", "Answer": "60", "Year": 1983})
    rows.append({"id": "undated", "problem": "no year anywhere", "answer": "7"})  # dropped: its year is unknown
    calls = fake_hub(monkeypatch, {None: rows})
    examples = load_benchmark("aime24")
    assert calls == [("HuggingFaceH4/aime_2024", None, "train")]
    assert [(e.id, e.question, e.gold) for e in examples] == [("1", "p1", "1")]


def test_hub_dart_filters_level_and_dedupes_the_pool(monkeypatch):
    def row(query, level, answer):
        return {"query": query, "gt_ans": answer, "query_metadata": {"level": level}, "response": "..."}

    rows = [row("q1", 5, "1"), row("q2", 4, "2"), row("q1", 5, "1"), row("q3", 5, "\\frac{1}{2}")]
    fake_hub(monkeypatch, {None: rows})
    examples = load_benchmark("dart5")
    assert [(e.id, e.question, e.gold, e.meta["level"]) for e in examples] == [
        ("0", "q1", "1", 5),
        ("3", "q3", "\\frac{1}{2}", 5),
    ]


def test_hub_arc_maps_digit_labels_and_concatenates_configs(monkeypatch):
    arc = {
        "id": "Mercury_1",
        "question": "Which is a metal?",
        "choices": {"text": ["wood", "iron", "glass"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    }
    fake_hub(monkeypatch, {"ARC-Easy": [arc]})
    (example,) = load_benchmark("arc_easy")
    assert example == Example("Mercury_1", "Which is a metal?\nA. wood\nB. iron\nC. glass", "B", "mc", {})
    subjects = benchmarks.get_benchmark("math").hf_configs
    fake_hub(monkeypatch, {s: [{"problem": s, "solution": "\\boxed{1}", "level": "Level 2"}] for s in subjects})
    assert [e.question for e in load_benchmark("math")] == list(subjects)


def test_programmatic_benchmarks_register_a_loader(monkeypatch):
    monkeypatch.setattr(benchmarks, "_REGISTRY", dict(benchmarks._REGISTRY))
    made = [Example(str(i), f"{i} + 1?", str(i + 1), "integer", {}) for i in range(10)]
    spec = register_benchmark(BenchmarkSpec("toy_test", "integer", loader=lambda: made))
    assert get_benchmark("toy_test") is spec
    assert load_benchmark("toy_test") == made
    assert load_benchmark("toy_test", limit=3, seed=1) == [made[i] for i in _shuffled(10, 1)[:3]]
    with pytest.raises(DataError, match="already registered"):
        register_benchmark(BenchmarkSpec("toy_test", "integer", loader=lambda: made))
    register_benchmark(BenchmarkSpec("toy_test", "integer", loader=lambda: made[:2]), replace=True)
    assert len(load_benchmark("toy_test")) == 2
    register_benchmark(BenchmarkSpec("toy_bad", "integer", loader=lambda: [{"question": "1+1"}]))
    with pytest.raises(DataError, match="benchmark 'toy_bad': its loader returned dict, not Example"):
        load_benchmark("toy_bad")
    with pytest.raises(DataError, match="unknown answer_type 'float'"):
        BenchmarkSpec("bad", "float", loader=lambda: made)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="either a loader or a row parser"):
        BenchmarkSpec("bad", "math")


def _shuffled(n: int, seed: int) -> list[int]:
    import datasets

    return datasets.Dataset.from_dict({"i": list(range(n))}).shuffle(seed=seed)["i"]


def test_paper_protocol_picks_the_same_200_as_the_authors_datasets_shuffle(tmp_path):
    """The authors: ``Dataset.shuffle(seed=42)`` then the first 200. A local file and the same rows as a ``Dataset``
    must give the same 200 (Python's ``random.Random(42).shuffle`` shares about 26 of them)."""
    import datasets

    rows = [{"question": f"Question number {i}: what is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(500)]
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", rows)
    ours = [e.question for e in load_benchmark("gsm8k", data_dir=tmp_path, **PAPER_PROTOCOL)]
    theirs = datasets.Dataset.from_list(rows).shuffle(seed=42).select(range(200))["question"]
    assert ours == theirs and len(set(ours)) == 200


def test_training_sources_are_train_splits_only(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "test q", "answer": "#### 1"}])
    with pytest.raises(
        DataError, match=r"gsm8k/train.jsonl: file not found; benchmark 'gsm8k' has no local train split"
    ):
        load_training_split("gsm8k", data_dir=tmp_path)
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [{"question": "train q", "answer": "#### 2"}])
    assert [e.question for e in load_training_split("gsm8k", data_dir=tmp_path)] == ["train q"]
    calls = fake_hub(monkeypatch, {"main": [{"question": "hub train q", "answer": "#### 3"}]})
    assert [e.question for e in load_training_split("gsm8k")] == ["hub train q"]
    assert calls == [("openai/gsm8k", "main", "train")]  # never the test split
    for name in ("aime24", "dart5", "math500"):
        with pytest.raises(DataError, match=f"benchmark '{name}' has no train split, so it cannot be a training"):
            load_training_split(name)
