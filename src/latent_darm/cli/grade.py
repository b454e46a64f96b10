"""``darm grade``: grade a JSONL file of predictions against gold answers, line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from latent_darm.cli.common import console
from latent_darm.errors import DataError
from latent_darm.grading import ANSWER_TYPES, grade
from latent_darm.io import read_jsonl


def _field_text(path: Path, number: int, record: dict[str, Any], name: str) -> str:
    """A required string field; plain numbers are accepted (a gold of 27 or 27.0 reads as "27")."""
    if name not in record or record[name] is None:
        raise DataError(f"{path}:{number}: missing field {name!r}")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{path}:{number}: field {name!r} must be a string or a number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_predictions(path: Path, default_type: str) -> list[tuple[dict[str, Any], str, str, str, bool]]:
    """Every line validated before any output, so a bad line never leaves half a result on stdout. An optional
    ``"truncated": true`` says the prediction hit its token budget (then no unanchored number is read from it)."""
    rows = []
    for number, record in read_jsonl(path):
        prediction = _field_text(path, number, record, "prediction")
        gold = _field_text(path, number, record, "gold")
        answer_type = record.get("answer_type", default_type)
        if answer_type not in ANSWER_TYPES:
            raise DataError(f"{path}:{number}: unknown answer_type {answer_type!r}; expected {', '.join(ANSWER_TYPES)}")
        truncated = record.get("truncated", False)
        if not isinstance(truncated, bool):
            raise DataError(f"{path}:{number}: field 'truncated' must be true or false, got {truncated!r}")
        rows.append((record, prediction, gold, answer_type, truncated))
    if not rows:
        raise DataError(f"{path}: no predictions in file")
    return rows


def grade_command(
    file: Path = typer.Argument(
        ..., help='JSONL file: {"prediction": ..., "gold": ..., "answer_type"?: ..., "truncated"?: true|false}.'
    ),
    answer_type: str = typer.Option(
        "math", "--answer-type", help="Default for lines without one: math | integer | mc."
    ),
) -> None:
    """Grade predictions: each line back on stdout with "correct" and "extracted"; a summary on stderr."""
    if answer_type not in ANSWER_TYPES:
        raise DataError(f"--answer-type must be one of {', '.join(ANSWER_TYPES)}; got {answer_type!r}")
    rows = read_predictions(file, answer_type)
    n_correct = 0
    for record, prediction, gold, kind, truncated in rows:
        result = grade(prediction, gold, kind, truncated=truncated)
        n_correct += result.correct
        graded = {**record, "correct": result.correct, "extracted": result.extracted}
        if result.ungradable:
            graded["ungradable"] = True
        typer.echo(json.dumps(graded, ensure_ascii=False))
    total = len(rows)
    console.print(f"graded {total}: {n_correct} correct, accuracy {n_correct / total:.1%}", highlight=False)
