"""Training pairs: sources, held-out split, and the refusal to train on evaluation questions."""

from __future__ import annotations

import json

import pytest

from latent_darm.errors import DataError
from latent_darm.training.data import (
    TrainingExample,
    check_no_overlap,
    dedupe,
    example_id,
    examples_from_jsonl,
    format_target,
    split_held_out,
)


def _example(question: str, source: str = "s") -> TrainingExample:
    return TrainingExample(example_id(source, question), question, "1", "math", source)


def test_jsonl_source_and_its_errors(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"q": "What is 1+1?", "a": 2}) + "\n" + json.dumps({"q": "Next?", "a": "x"}) + "\n")
    examples = examples_from_jsonl(path, question_field="q", target_field="a")
    assert [(e.question, e.target, e.source) for e in examples] == [
        ("What is 1+1?", "2", "train"),
        ("Next?", "x", "train"),
    ]
    path.write_text(json.dumps({"q": "What is 1+1?"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: missing or empty target"):
        examples_from_jsonl(path, question_field="q", target_field="a")
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: malformed JSON"):
        examples_from_jsonl(path)


def test_targets_use_the_answer_format_the_executor_is_asked_for():
    assert format_target("C", "mc") == "Answer: C"
    assert format_target("\\frac{1}{2}", "math") == "\\boxed{\\frac{1}{2}}"


def test_dedupe_keeps_the_first_copy_per_source_and_normalised_question():
    first, copy, other_source = _example("What is 1+1?"), _example("what is 1 + 1"), _example("What is 1+1?", "t")
    copy = TrainingExample(copy.id, copy.question, "2", "math", "s")
    later = _example("Next?")
    assert dedupe([first, later, copy, other_source]) == [first, later, other_source]


def test_held_out_split_is_per_source_deterministic_and_disjoint():
    examples = [_example(f"q{i}", source=f"src{i % 3}") for i in range(60)]
    train, held = split_held_out(examples, per_source=10, seed=1)
    assert len(held) == 30 and len(train) == 30
    assert {e.id for e in train}.isdisjoint({e.id for e in held})
    assert sorted(e.source for e in held) == sorted(["src0", "src1", "src2"] * 10)
    assert split_held_out(examples, per_source=10, seed=1) == (train, held)
    assert split_held_out(examples, per_source=10, seed=2)[1] != held


def test_overlap_with_evaluation_sets_is_refused_or_dropped():
    train = [_example("What is  2 + 2?"), _example("Name a prime.")]
    evaluation = {"gsm8k": ["what is 2 + 2"], "math": ["Unrelated?"]}
    with pytest.raises(DataError, match="1 training questions also appear in evaluation set 'gsm8k'"):
        check_no_overlap(train, evaluation)
    assert [e.question for e in check_no_overlap(train, evaluation, drop=True)] == ["Name a prime."]
    assert check_no_overlap(train, {"math": ["Unrelated?"]}) == train
