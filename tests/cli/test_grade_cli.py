"""``darm grade``: every line back in order with ``correct`` and ``extracted``, a summary on stderr, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LINES = [
    {"id": "a", "prediction": "So the answer is $\\boxed{\\frac{9}{7}}$.", "gold": "\\dfrac{9}{7}"},
    {"id": "b", "prediction": "She makes 9 * 2 = 18.\n#### 17", "gold": "18"},
    {"id": "c", "prediction": "Answer: C", "gold": "C", "answer_type": "mc"},
    {"id": "d", "prediction": "A ball is round.", "gold": "A", "answer_type": "mc"},
    {"id": "e", "prediction": "$1,000 dollars", "gold": 1000.0, "answer_type": "integer"},
]


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_grades_each_line_in_order_with_a_summary(darm, tmp_path):
    code, out, err = darm("grade", write_lines(tmp_path / "preds.jsonl", LINES))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == ["a", "b", "c", "d", "e"]
    assert [r["correct"] for r in records] == [True, False, True, False, True]
    assert [r["extracted"] for r in records] == ["\\frac{9}{7}", "17", "C", None, "1,000 dollars"]
    for record, line in zip(records, LINES, strict=True):
        assert {k: record[k] for k in line} == line  # the input fields come back unchanged
    assert "graded 5: 3 correct, accuracy 60.0%" in err


def test_default_answer_type_option(darm, tmp_path):
    path = write_lines(tmp_path / "preds.jsonl", [{"prediction": "(B)", "gold": "B"}])
    _, out, _ = darm("grade", path, "--answer-type", "mc")
    assert json.loads(out)["correct"] is True
    code, _, err = darm("grade", path, "--answer-type", "letters")
    assert code == 2 and "--answer-type must be one of" in err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([LINES[0], "{broken"], "preds.jsonl:2: malformed JSON"),
        ([LINES[0], {"gold": "1"}], "preds.jsonl:2: missing field 'prediction'"),
        ([{"prediction": "1"}], "preds.jsonl:1: missing field 'gold'"),
        ([{"prediction": ["1"], "gold": "1"}], "preds.jsonl:1: field 'prediction' must be a string or a number"),
        (
            [LINES[0], LINES[1], {"prediction": "1", "gold": "1", "answer_type": "float"}],
            "preds.jsonl:3: unknown answer_type",
        ),
        ([], "preds.jsonl: no predictions in file"),
    ],
)
def test_bad_lines_fail_with_file_and_line_and_no_partial_output(darm, tmp_path, lines, message):
    code, out, err = darm("grade", write_lines(tmp_path / "preds.jsonl", lines))
    assert code == 2
    assert out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_file(darm, tmp_path):
    code, _, err = darm("grade", tmp_path / "nope.jsonl")
    assert code == 2 and "nope.jsonl: file not found" in err
