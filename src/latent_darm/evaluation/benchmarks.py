"""Benchmark registry: where each benchmark comes from, how its rows become :class:`Example` objects, and the
paper's subset protocol (``datasets.Dataset.shuffle(seed=42)``, first 200, as the authors selected them).

A benchmark is read from ``<data_dir>/<folder>/test.jsonl`` when a data directory is given (argument, else the
``LATENT_DARM_DATA`` environment variable), otherwise from the Hugging Face hub. Programmatic benchmarks (the toy
world) register a spec whose ``loader`` builds the examples in Python. Training may draw on a benchmark's *train*
split only (:func:`load_training_split`: ``<folder>/train.jsonl`` locally, ``hf_train_splits`` on the hub); a
benchmark without one cannot be a training source.

Hub ids marked "unverified" below were chosen from dataset cards without downloading them here (no network);
their field names are read defensively (several spellings) for that reason.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latent_darm.errors import DataError
from latent_darm.extras import require
from latent_darm.grading import MC_LETTERS, check_answer_type, format_choices, last_boxed
from latent_darm.io import read_jsonl
from latent_darm.iterables import first_per_key
from latent_darm.pipelines.prompts import AnswerType
from latent_darm.seeds import MAX_SEED

DATA_ENV = "LATENT_DARM_DATA"
PAPER_PROTOCOL: dict[str, int] = dict(seed=42, limit=200)


@dataclass(frozen=True)
class Example:
    """One question with its gold answer. ``id`` is stable: the row's own id when it has one, else its line."""

    id: str
    question: str
    gold: str
    answer_type: AnswerType
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


class HubUnreachableError(DataError):
    """The Hugging Face hub could not be reached (``datasets`` raised ``ConnectionError``): every other hub load
    would fail the same way, after the same retries."""


class RowError(ValueError):
    """A row parser's complaint; the loader adds the file and line (or hub row) to it."""


RowParser = Callable[[Mapping[str, Any], int], Example]
RowFilter = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how to read it.

    ``parse_row(row, index)`` turns a raw row into an Example (``index``: the line number of a local file, the row
    number on the hub); ``row_filter`` keeps only the rows that belong to the benchmark, in either layout.
    ``loader`` replaces files entirely for programmatic benchmarks. ``gold_field`` records, for readers, which
    source field holds the gold answer (the parser is what reads it). ``hf_train_splits`` are the hub splits that
    may serve as training data (none: the benchmark cannot be a training source from the hub).
    """

    name: str
    answer_type: AnswerType
    parse_row: RowParser | None = None
    gold_field: str = "answer"
    hf_id: str | None = None
    hf_configs: tuple[str | None, ...] = (None,)
    hf_split: str = "test"
    hf_train_splits: tuple[str, ...] = ()
    row_filter: RowFilter | None = None
    folder: str | None = None
    loader: Callable[[], Iterable[Example]] | None = None
    hub_unique_questions: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        check_answer_type(self.answer_type)
        if self.loader is None and self.parse_row is None:
            raise DataError(f"benchmark {self.name!r}: give either a loader or a row parser")


_REGISTRY: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec, *, replace: bool = False) -> BenchmarkSpec:
    """Add a benchmark; re-registering a name is an error unless ``replace`` (so typos do not shadow silently)."""
    if spec.name in _REGISTRY and not replace:
        raise DataError(f"benchmark {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}") from None


def benchmark_names() -> list[str]:
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def load_benchmark(
    name: str, *, data_dir: Path | str | None = None, limit: int | None = None, seed: int | None = None
) -> list[Example]:
    """Examples of a benchmark: all, or the first ``limit`` in file order, or after a seeded shuffle.

    ``load_benchmark(name, **PAPER_PROTOCOL)`` is the paper's protocol.
    """
    spec = get_benchmark(name)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    examples = _load_all(spec, data_dir)
    return select_subset(examples, limit=limit, seed=seed)


def select_subset(examples: list[Example], *, limit: int | None = None, seed: int | None = None) -> list[Example]:
    """With a seed: the order of ``datasets.Dataset.shuffle(seed=seed)`` (the authors' selection, for local and hub
    rows alike), then the first ``limit``; without: the first ``limit`` in file order. The seed must be what that
    shuffle (numpy underneath) takes, 0 to 2**32 - 1, or it fails deep inside datasets."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise DataError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    ordered = list(examples)
    if seed is not None and ordered:
        datasets = require("datasets", "the seeded subset (the authors' datasets shuffle)")

        # The permutation depends only on the number of rows and the seed, so shuffling row positions picks the
        # same rows as shuffling a Dataset of the rows themselves.
        positions = datasets.Dataset.from_dict({"i": list(range(len(ordered)))}).shuffle(seed=seed)["i"]
        ordered = [ordered[i] for i in positions]
    return ordered if limit is None else ordered[:limit]


def load_training_split(name: str, *, data_dir: Path | str | None = None) -> list[Example]:
    """A benchmark's train split, for use as training data: ``<data_dir>/<folder>/train.jsonl`` when a data
    directory is given, else the hub's ``hf_train_splits``. Never the evaluation split: a benchmark without a train
    split is refused with a one-line error."""
    spec = get_benchmark(name)
    refusal = f"benchmark {name!r} has no train split, so it cannot be a training source (train splits only)"
    if spec.loader is not None:
        raise DataError(refusal)
    root = resolve_data_dir(data_dir)
    if root is not None:
        path = root / (spec.folder or spec.name) / TRAIN_FILE
        if path.is_file():
            return _load_local(spec, path)
        if not spec.hf_train_splits:
            raise DataError(refusal)
        raise DataError(
            f"{path}: file not found; benchmark {name!r} has no local train split (without a data directory, the "
            f"train split of {spec.hf_id} is used)"
        )
    if not spec.hf_train_splits:
        raise DataError(refusal)
    return _load_hub(spec, spec.hf_train_splits)


def resolve_data_dir(data_dir: Path | str | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


TEST_FILE = "test.jsonl"
TRAIN_FILE = "train.jsonl"


def benchmark_file(spec: BenchmarkSpec, data_dir: Path) -> Path:
    return data_dir / (spec.folder or spec.name) / TEST_FILE


def _load_all(spec: BenchmarkSpec, data_dir: Path | str | None) -> list[Example]:
    if spec.loader is not None:
        examples = list(spec.loader())
        bad = next((item for item in examples if not isinstance(item, Example)), None)
        if bad is not None:
            raise DataError(f"benchmark {spec.name!r}: its loader returned {type(bad).__name__}, not Example")
        return examples
    root = resolve_data_dir(data_dir)
    if root is not None:
        return _load_local(spec, benchmark_file(spec, root))
    return _load_hub(spec)


def _load_local(spec: BenchmarkSpec, path: Path) -> list[Example]:
    if not path.is_file():
        hint = f"; unset {DATA_ENV} to download {spec.hf_id} from the hub" if spec.hf_id else ""
        raise DataError(f"{path}: file not found (benchmark {spec.name!r}){hint}")
    rows = ((f"{path}:{number}", number, row) for number, row in read_jsonl(path))
    examples = _parse_rows(spec, rows)
    if not examples:
        raise DataError(f"{path}: no rows for benchmark {spec.name!r}")
    return examples


def _load_hub(spec: BenchmarkSpec, splits: tuple[str, ...] | None = None) -> list[Example]:
    if spec.hf_id is None:
        raise DataError(f"benchmark {spec.name!r} has no hub source; set {DATA_ENV} or pass data_dir")
    splits = splits or (spec.hf_split,)
    where = f"{spec.hf_id} split {'+'.join(splits)}"
    datasets = require("datasets", f"benchmark {spec.name!r} from the Hugging Face hub")
    try:
        rows: list[Mapping[str, Any]] = []
        for config in spec.hf_configs:
            for split in splits:
                rows.extend(datasets.load_dataset(spec.hf_id, config, split=split))
    except Exception as exc:  # offline, renamed, gated: always one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        error = HubUnreachableError if isinstance(exc, ConnectionError) else DataError
        raise error(f"benchmark {spec.name!r}: cannot load {where} from the Hugging Face hub: {reason}") from None
    examples = _parse_rows(spec, ((f"{where} row {i}", i, row) for i, row in enumerate(rows)))
    if spec.hub_unique_questions:
        examples = first_per_key(examples, lambda example: example.question)  # DART: a row per sampled response
    if not examples:
        raise DataError(f"benchmark {spec.name!r}: no rows of {where} passed its filter")
    return examples


def _parse_rows(spec: BenchmarkSpec, rows: Iterable[tuple[str, int, Mapping[str, Any]]]) -> list[Example]:
    assert spec.parse_row is not None
    examples = []
    for where, index, row in rows:
        try:
            if spec.row_filter is not None and not spec.row_filter(row):
                continue
            example = spec.parse_row(row, index)
        except RowError as exc:
            raise DataError(f"{where}: {exc}") from None
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------------------------------------------
# Row parsing helpers
# ----------------------------------------------------------------------------------------------------------------


def _text(row: Mapping[str, Any], keys: tuple[str, ...], what: str) -> str:
    """The first non-empty string among ``keys`` (numbers are written as plain numbers: 27.0 -> "27")."""
    for key in keys:
        value = row.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            return _number_text(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise RowError(f"missing {what} (field {' / '.join(repr(k) for k in keys)})")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _row_id(row: Mapping[str, Any], index: int, keys: tuple[str, ...] = ("id", "idx", "unique_id", "ID")) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return str(index)


def _olympiad_answer(value: str) -> str:
    """``$69$,$84$`` -> ``69, 84``: drop the math delimiters, keeping answers apart with ", " (not a thousands
    separator)."""
    value = re.sub(r"(?<!\\)\$\s*,\s*\$", ", ", value.strip())
    return re.sub(r"(?<!\\)\$", "", value).strip()


def _level(value: Any) -> int | None:
    """MATH levels come as "Level 3", 3 or "3"; "Level ?" (a few MATH rows) has none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.search(r"\d+", str(value)) if value is not None else None
    return int(match.group()) if match else None


def _meta(row: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: row[key] for key in keys if row.get(key) is not None}


def _lettered(question: str, choices: list[str]) -> str:
    """:func:`latent_darm.grading.format_choices`, with a bad row reported as a row error."""
    try:
        return format_choices(question, choices)
    except ValueError as exc:
        raise RowError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------------
# Row parsers, one per source layout
# ----------------------------------------------------------------------------------------------------------------


def parse_math_row(row: Mapping[str, Any], index: int) -> Example:
    """MATH / MATH-500 / DART layouts: gold from ``answer`` or ``gt_ans`` when given, else the solution's box."""
    question = _text(row, ("problem", "query", "question"), "question")
    gold = _gold_or_boxed(row, ("answer", "gt_ans"), ("solution",))
    level = _level(row.get("level", _nested(row, "query_metadata", "level")))
    meta = {"level": level} if level is not None else {}
    meta |= _meta(row, ("type", "subject", "unique_id"))
    return Example(_row_id(row, index), question, gold, "math", meta)


def parse_boxed_solution_row(row: Mapping[str, Any], index: int) -> Example:
    """Minerva: the gold is the last box of the reference solution (or an ``answer`` field on some mirrors)."""
    question = _text(row, ("problem", "question"), "question")
    gold = _gold_or_boxed(row, ("answer",), ("solution",))
    return Example(_row_id(row, index), question, gold, "math", _meta(row, ("type",)))


def _gold_or_boxed(row: Mapping[str, Any], answer_keys: tuple[str, ...], solution_keys: tuple[str, ...]) -> str:
    for key in answer_keys:
        if row.get(key) is not None and str(row[key]).strip():
            return _text(row, (key,), "gold answer")
    for key in solution_keys:
        solution = row.get(key)
        if isinstance(solution, str):
            boxed = last_boxed(solution)
            if boxed:
                return boxed.strip()
    raise RowError(f"missing gold answer (field {' / '.join(repr(k) for k in answer_keys)} or a \\boxed{{}} solution)")


def _nested(row: Mapping[str, Any], outer: str, inner: str) -> Any:
    value = row.get(outer)
    return value.get(inner) if isinstance(value, Mapping) else None


def parse_gsm8k_row(row: Mapping[str, Any], index: int) -> Example:
    """GSM8K: the gold is the number after ``####`` in the worked answer."""
    question = _text(row, ("question",), "question")
    answer = _text(row, ("answer",), "answer")
    if "####" not in answer:
        raise RowError("field 'answer' has no '#### <number>' gold")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise RowError("empty gold after '####'")
    return Example(_row_id(row, index, ("idx", "id")), question, gold, "integer", {})


def parse_competition_row(row: Mapping[str, Any], index: int) -> Example:
    """AIME / AMC layouts: ``problem`` (or ``question``) and a numeric ``answer`` (AMC stores floats)."""
    question = _text(row, ("problem", "question", "Problem", "Question"), "question")
    gold = _text(row, ("answer", "Answer"), "gold answer")
    if re.fullmatch(r"-?\d+\.0+", gold):
        gold = gold.split(".")[0]
    return Example(_row_id(row, index), question, gold, "integer", _meta(row, ("url", "year", "Year")))


def parse_olympiad_row(row: Mapping[str, Any], index: int) -> Example:
    """OlympiadBench: ``final_answer`` is a list (several for multi-answer problems), often wrapped in ``$``."""
    question = _text(row, ("question",), "question")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        question = context.strip() + "\n\n" + question
    answers = row.get("final_answer")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not any(str(a).strip() for a in answers):
        raise RowError("missing gold answer (field 'final_answer', a list)")
    gold = ", ".join(_olympiad_answer(str(a)) for a in answers if str(a).strip())
    meta = _meta(row, ("subfield", "answer_type", "unit", "is_multiple_answer"))
    return Example(_row_id(row, index), question, gold, "math", meta)


def parse_mmlu_row(row: Mapping[str, Any], index: int) -> Example:
    """MMLU layouts: ``choices`` (a list, or a list written as text) and ``answer`` (an index or a letter)."""
    question = _text(row, ("question",), "question")
    choices = _choices_list(row.get("choices"))
    gold = _mc_gold(row.get("answer"), len(choices))
    meta = _meta(row, ("subject", "type"))
    return Example(_row_id(row, index), _lettered(question, choices), gold, "mc", meta)


def parse_arc_row(row: Mapping[str, Any], index: int) -> Example:
    """ARC: ``choices = {text: [...], label: [...]}`` with letter or digit labels and ``answerKey``."""
    question = _text(row, ("question",), "question")
    choices = row.get("choices")
    if not isinstance(choices, Mapping) or not isinstance(choices.get("text"), list):
        raise RowError("missing choices (field 'choices' with 'text' and 'label' lists)")
    labels = [str(label).strip() for label in choices.get("label", [])]
    key = str(row.get("answerKey", "")).strip()
    if key not in labels:
        raise RowError(f"answerKey {key!r} is not one of the labels {labels}")
    texts = list(choices["text"])
    gold = MC_LETTERS[labels.index(key)]
    return Example(_row_id(row, index), _lettered(question, texts), gold, "mc", {})


def _choices_list(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            import ast

            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise RowError("field 'choices' is text that is not a list") from None
    if not isinstance(value, list | tuple) or not value:
        raise RowError("missing choices (field 'choices', a list)")
    return [str(choice) for choice in value]


def _mc_gold(answer: Any, n_choices: int) -> str:
    if isinstance(answer, bool) or answer is None:
        raise RowError("missing gold answer (field 'answer')")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        position = int(answer)
    elif isinstance(answer, str) and answer.strip().upper() in MC_LETTERS:
        position = MC_LETTERS.index(answer.strip().upper())
    else:
        raise RowError(f"field 'answer' must be a choice index or letter, got {answer!r}")
    if not 0 <= position < n_choices:
        raise RowError(f"field 'answer' {answer!r} is out of range for {n_choices} choices")
    return MC_LETTERS[position]


# ----------------------------------------------------------------------------------------------------------------
# Row filters
# ----------------------------------------------------------------------------------------------------------------


def level_filter(level: int) -> RowFilter:
    """DART-k: ``query_metadata.level == k`` on the hub pool; ``level == "Level k"`` in the local MATH stand-in."""

    def keep(row: Mapping[str, Any]) -> bool:
        value = _nested(row, "query_metadata", "level")
        return _level(value if value is not None else row.get("level")) == level

    return keep


def year_filter(year: int) -> RowFilter:
    """Keep one contest year (from a ``year``/``Year`` field or the AoPS url); a row whose year cannot be read is
    dropped, so an undated row of a 1983–2024 collection cannot slip in. The authors' loader forgot this filter.
    """

    def keep(row: Mapping[str, Any]) -> bool:
        value = row.get("year", row.get("Year"))
        if value is None:
            match = re.search(r"/(\d{4})_AIME", str(row.get("url", "")))
            value = match.group(1) if match else None
        return value is not None and str(value).strip() == str(year)

    return keep


# ----------------------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------------------


def _builtin_specs() -> list[BenchmarkSpec]:
    specs = [
        BenchmarkSpec(
            "arc_easy",
            "mc",
            parse_arc_row,
            "answerKey",
            "allenai/ai2_arc",
            ("ARC-Easy",),
            "test",
            ("train", "validation"),
        ),
        BenchmarkSpec(
            "arc_challenge",
            "mc",
            parse_arc_row,
            "answerKey",
            "allenai/ai2_arc",
            ("ARC-Challenge",),
            "test",
            ("train", "validation"),
        ),
        BenchmarkSpec("mmlu", "mc", parse_mmlu_row, "answer", "cais/mmlu", ("all",), "test"),
        # TIGER-Lab/MMLU-STEM (3153 rows on its card) is close to, not the same as, the local 3018-row file
        # from the Qwen2.5-Math evaluation data; unverified.
        BenchmarkSpec("mmlu_stem", "mc", parse_mmlu_row, "answer", "TIGER-Lab/MMLU-STEM", folder="mmlu_stem"),
        # MATH test (5000) as seven subject configs; the local file is the math-evaluation-harness copy.
        BenchmarkSpec(
            "math",
            "math",
            parse_math_row,
            "solution",
            "EleutherAI/hendrycks_math",
            (
                "algebra",
                "counting_and_probability",
                "geometry",
                "intermediate_algebra",
                "number_theory",
                "prealgebra",
                "precalculus",
            ),
            hf_train_splits=("train",),
            folder="math",
        ),
        BenchmarkSpec("math500", "math", parse_math_row, "answer", "HuggingFaceH4/MATH-500", folder="math500"),
        BenchmarkSpec(
            "gsm8k", "integer", parse_gsm8k_row, "answer", "openai/gsm8k", ("main",), hf_train_splits=("train",)
        ),
        # 30 problems of AIME 2024 I+II; the year filter guards against 1983–2024 collections.
        BenchmarkSpec(
            "aime24",
            "integer",
            parse_competition_row,
            "answer",
            "HuggingFaceH4/aime_2024",
            hf_split="train",
            row_filter=year_filter(2024),
            folder="aime24",
        ),
        # Unverified mirror whose card matches the local layout (id, problem, float answer, url; 40 rows).
        BenchmarkSpec(
            "amc23", "integer", parse_competition_row, "answer", "FlippyDora/amc23", hf_split="train", folder="amc23"
        ),
        # Unverified mirror (Qwen2.5-Math's minerva_math test.jsonl); parser accepts answer or boxed solution.
        BenchmarkSpec(
            "minerva_math", "math", parse_boxed_solution_row, "solution", "math-ai/minervamath", folder="minerva_math"
        ),
        # English text-only competition maths; the card lists 674 rows against 675 in the local file; unverified.
        BenchmarkSpec(
            "olympiadbench",
            "math",
            parse_olympiad_row,
            "final_answer",
            "Hothan/OlympiadBench",
            ("OE_TO_maths_en_COMP",),
            "train",
            folder="olympiadbench",
        ),
    ]
    for level in range(1, 6):
        # The authors' DART-k: MATH problems of difficulty k from the DART-Math query pool (many responses per
        # query, hence hub_unique_questions). Locally the MATH test file filtered by level stands in.
        specs.append(
            BenchmarkSpec(
                f"dart{level}",
                "math",
                parse_math_row,
                "gt_ans",
                "hkust-nlp/dart-math-pool-math",
                hf_split="train",
                row_filter=level_filter(level),
                folder="math",
                hub_unique_questions=True,
                description=f"MATH difficulty level {level}",
            )
        )
    return specs


for _spec in _builtin_specs():
    register_benchmark(_spec)
