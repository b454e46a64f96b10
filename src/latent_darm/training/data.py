"""Question/target pairs for projector training, from a local JSONL, a Hugging Face dataset, a registered
benchmark, or the paper's preset — and the guard that keeps them disjoint from every evaluation set.

The paper trained on ~5,000 questions each from ARC-Easy, ARC-Challenge and DART-1…5 with the gold answer as
the only target, 10 per source held out. Its released code drew those questions from the pools it evaluated on;
:func:`check_no_overlap` exists so ours cannot.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_darm.errors import DataError
from latent_darm.extras import require
from latent_darm.grading import MC_LETTERS, format_choices
from latent_darm.io import read_jsonl
from latent_darm.iterables import first_per_key
from latent_darm.pipelines.prompts import AnswerType


@dataclass(frozen=True)
class TrainingExample:
    """One training pair. ``target`` is the gold answer itself (what grading compares with); the executor learns to
    reply :func:`format_target` of it, or ``reply`` when one is given (a world whose executor writes a short
    derivation before the box, as the toy world's does)."""

    id: str
    question: str
    target: str
    answer_type: AnswerType
    source: str
    reply: str | None = None

    def reply_text(self) -> str:
        return self.reply if self.reply is not None else format_target(self.target, self.answer_type)


def format_target(target: str, answer_type: AnswerType) -> str:
    """The reply the executor learns to give, in the same format its latent prompt asks for (and grading reads)."""
    if answer_type == "mc":
        return f"Answer: {target}"
    return f"\\boxed{{{target}}}"


def normalize_question(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form, so near-identical copies still count as overlap."""
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def example_id(source: str, question: str) -> str:
    return f"{source}:{hashlib.sha1(normalize_question(question).encode()).hexdigest()[:16]}"


def _make(source: str, question: Any, target: Any, answer_type: AnswerType, where: str) -> TrainingExample:
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: missing or empty question")
    if target is None or (isinstance(target, str) and not target.strip()):
        raise DataError(f"{where}: missing or empty target")
    # A target is text; a plain number (a GSM8K-style answer of 72) reads as its text, anything else is refused.
    if isinstance(target, bool) or not isinstance(target, str | int | float):
        raise DataError(f"{where}: the target must be a string (or a number), got {type(target).__name__}")
    return TrainingExample(example_id(source, question), question.strip(), str(target).strip(), answer_type, source)


def examples_from_jsonl(
    path: str | Path,
    *,
    question_field: str = "question",
    target_field: str = "answer",
    answer_type: AnswerType = "math",
    source: str | None = None,
) -> list[TrainingExample]:
    """One pair per line of a local JSONL file; a line without the fields is an error naming file and line."""
    path = Path(path)
    name = source or path.stem
    examples = [
        _make(name, record.get(question_field), record.get(target_field), answer_type, f"{path}:{number}")
        for number, record in read_jsonl(path)
    ]
    if not examples:
        raise DataError(f"{path}: no training examples in file")
    return examples


def examples_from_hub(
    dataset_id: str,
    *,
    config: str | None = None,
    splits: Sequence[str] = ("train",),
    question: Callable[[Mapping[str, Any]], Any],
    target: Callable[[Mapping[str, Any]], Any],
    answer_type: AnswerType,
    source: str,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
) -> list[TrainingExample]:
    """Pairs from a Hugging Face dataset (needs a network or the local datasets cache)."""
    load_dataset = require("datasets", f"training source {source}").load_dataset
    try:
        rows = [row for split in splits for row in load_dataset(dataset_id, config, split=split)]
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"training source {source}: could not load {dataset_id} from the hub: {reason}") from None
    return [
        _make(source, question(row), target(row), answer_type, f"{dataset_id} row {i}")
        for i, row in enumerate(rows)
        if keep is None or keep(row)
    ]


def _arc_question(row: Mapping[str, Any]) -> str:
    """Lettered options exactly as the ARC benchmark shows them at evaluation time."""
    return format_choices(row["question"], list(row["choices"]["text"]))


def _arc_target(row: Mapping[str, Any]) -> str:
    # Some ARC rows label options 1-4; the executor always answers with the option's letter.
    return MC_LETTERS[list(row["choices"]["label"]).index(row["answerKey"])]


def paper_preset(per_source: int = 5000, seed: int = 0) -> list[TrainingExample]:
    """The paper's mixture: ARC-Easy, ARC-Challenge (train + validation splits only) and DART-1…5 from the
    DART-Math pool, ``per_source`` each (all of ARC, which has fewer)."""
    sources: list[list[TrainingExample]] = []
    for config, name in (("ARC-Easy", "arc_easy"), ("ARC-Challenge", "arc_challenge")):
        sources.append(
            examples_from_hub(
                "allenai/ai2_arc",
                config=config,
                splits=("train", "validation"),
                question=_arc_question,
                target=_arc_target,
                answer_type="mc",
                source=name,
            )
        )
    for level in range(1, 6):
        sources.append(
            examples_from_hub(
                "hkust-nlp/dart-math-pool-math",
                question=lambda row: row["query"],
                target=lambda row: row["gt_ans"],
                answer_type="math",
                source=f"dart{level}",
                keep=lambda row, level=level: (row.get("query_metadata") or {}).get("level") == level,
            )
        )
    rng = random.Random(seed)
    mixture = []
    for examples in sources:
        examples = dedupe(examples)
        rng.shuffle(examples)
        mixture.extend(examples[:per_source])
    return mixture


def dedupe(examples: Iterable[TrainingExample]) -> list[TrainingExample]:
    """First occurrence of each (source, normalised question)."""
    return first_per_key(examples, lambda example: example.id)


def split_held_out(
    examples: Sequence[TrainingExample], per_source: int = 10, seed: int = 0
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Hold out ``per_source`` examples of every source (deterministic under ``seed``) for validation."""
    by_source: dict[str, list[TrainingExample]] = {}
    for example in examples:
        by_source.setdefault(example.source, []).append(example)
    rng = random.Random(seed)
    train, held_out = [], []
    for source in sorted(by_source):
        group = list(by_source[source])
        rng.shuffle(group)
        take = min(per_source, max(0, len(group) - 1))
        held_out.extend(group[:take])
        train.extend(group[take:])
    return train, held_out


def check_no_overlap(
    train: Sequence[TrainingExample], evaluation: Mapping[str, Iterable[str]], drop: bool = False
) -> list[TrainingExample]:
    """Refuse (or, with ``drop``, remove) training questions that appear in any evaluation set.

    ``evaluation`` maps a benchmark name to its questions. Matching is on :func:`normalize_question`.
    """
    owner: dict[str, str] = {}
    for name, questions in evaluation.items():
        for question in questions:
            owner.setdefault(normalize_question(question), name)
    overlapping = [e for e in train if normalize_question(e.question) in owner]
    if overlapping and not drop:
        first = overlapping[0]
        raise DataError(
            f"{len(overlapping)} training questions also appear in evaluation set "
            f"'{owner[normalize_question(first.question)]}' (first: {first.question[:60]!r}); "
            "remove them from the training data or pass --drop-overlap"
        )
    bad = {id(e) for e in overlapping}
    return [e for e in train if id(e) not in bad]
