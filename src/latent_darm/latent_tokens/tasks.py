"""The puzzle world: a task (Sudoku or Countdown), its seeded train/test splits, fixed-length rows and grading.

A row is ``[BOS] puzzle [SEP] solution [EOS]`` in token ids, with fixed lengths so every row of a world has the
same shape: the puzzle is left-padded with ``[PAD]`` to the task's longest puzzle, and the *answer region*
(``solution [EOS]``) is right-padded with ``[EOS]``. The answer region is what the models generate; a Sudoku's
is ``size² + 1`` tokens, a Countdown's the longest reference chain plus one.

Test puzzles are drawn first; train puzzles are drawn from the same generator with a different seed and any
puzzle already in the test split is skipped, so the splits never share a puzzle (4×4 Sudoku has only 288 solved
grids, so they do share solutions).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from latent_darm.errors import ConfigError, DataError
from latent_darm.io import read_jsonl
from latent_darm.latent_tokens import countdown, sudoku
from latent_darm.latent_tokens.tokenizer import SYMBOLS, VOCABULARY, symbol_ids

TASKS = ("sudoku", "countdown")
WORLD_VERSION = 1  # bump when generation or row format changes meaning


def check_task(name: str) -> str:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return name


@dataclass(frozen=True)
class WorldConfig:
    """What decides a world's data. ``size``: the Sudoku side (4, 6, 9) or the count of Countdown numbers;
    ``difficulty``: the number of Sudoku givens, or the largest Countdown number."""

    task: str = "sudoku"
    size: int = 4
    difficulty: int = 5
    train_size: int = 20000
    test_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.task == "sudoku":
            sudoku.geometry(self.size)
            if not 0 < self.difficulty <= self.size * self.size:
                raise ConfigError(
                    f"--givens {self.difficulty} is outside 1..{self.size**2} for {self.size}×{self.size}"
                )
        elif not 2 <= self.size <= 6 or not 1 <= self.difficulty <= 99:
            raise ConfigError(f"Countdown needs 2..6 numbers in 1..99; got size={self.size}, max={self.difficulty}")

    def fingerprint(self) -> str:
        payload = {**asdict(self), "version": WORLD_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def puzzle_length(self) -> int:
        if self.task == "sudoku":
            return self.size * self.size
        return self.size * 3 + 4  # up to 2 digits + comma each, a colon and a 3-digit target

    @property
    def answer_length(self) -> int:
        if self.task == "sudoku":
            return self.size * self.size + 1
        return (self.size - 1) * 12 + 1  # steps "dd*dd=ddd;" up to 3-digit values, then [EOS]

    @property
    def prompt_length(self) -> int:
        """[BOS] puzzle [SEP]."""
        return self.puzzle_length + 2

    @property
    def row_length(self) -> int:
        return self.prompt_length + self.answer_length


@dataclass(frozen=True)
class Puzzle:
    puzzle: str
    solution: str


def _generate_one(config: WorldConfig, rng: random.Random) -> Puzzle:
    if config.task == "sudoku":
        return Puzzle(*sudoku.generate_puzzle(config.size, config.difficulty, rng))
    while True:
        puzzle, solution = countdown.generate_puzzle(config.size, config.difficulty, rng)
        if len(puzzle) <= config.puzzle_length and len(solution) < config.answer_length:
            return Puzzle(puzzle, solution)


def generate_splits(config: WorldConfig, on_progress=None) -> dict[str, list[Puzzle]]:
    """Seeded test then train puzzles, disjoint by puzzle (duplicates within a split are dropped too)."""
    splits: dict[str, list[Puzzle]] = {}
    seen: set[str] = set()
    for split, count in (("test", config.test_size), ("train", config.train_size)):
        rng = random.Random(f"latent-tokens:{config.fingerprint()}:{split}")
        out: list[Puzzle] = []
        misses = 0
        while len(out) < count:
            item = _generate_one(config, rng)
            if item.puzzle in seen:
                misses += 1
                if misses > 20 * count + 1000:
                    raise ConfigError(f"only {len(out)} distinct {split} puzzles exist for these settings")
                continue
            seen.add(item.puzzle)
            out.append(item)
            if on_progress is not None:
                on_progress(1)
        splits[split] = out
    return splits


def encode_rows(config: WorldConfig, puzzles: list[Puzzle]) -> torch.Tensor:
    """[N, row_length] token ids, ``[BOS] puzzle [SEP] solution [EOS]`` with the fixed-length padding."""
    pad, bos, sep, eos = (VOCABULARY.index(t) for t in ("[PAD]", "[BOS]", "[SEP]", "[EOS]"))
    rows = []
    for p in puzzles:
        prompt = symbol_ids(p.puzzle)
        answer = symbol_ids(p.solution)
        if len(prompt) > config.puzzle_length or len(answer) >= config.answer_length:
            raise ConfigError(f"puzzle {p.puzzle!r} does not fit the world's row lengths")
        rows.append(
            [bos]
            + [pad] * (config.puzzle_length - len(prompt))
            + prompt
            + [sep]
            + answer
            + [eos] * (config.answer_length - len(answer))
        )
    return torch.tensor(rows, dtype=torch.long)


def answer_text(ids: list[int]) -> str | None:
    """The solution text of an answer region: characters up to the first [EOS]; None when the region holds any
    other special token (a mask left over, padding) or has no [EOS] at all, so no malformed output is graded."""
    eos = VOCABULARY.index("[EOS]")
    if eos not in ids:
        return None
    body = ids[: ids.index(eos)]
    if any(VOCABULARY[i] not in SYMBOLS for i in body):
        return None
    return "".join(VOCABULARY[i] for i in body)


def grade(config: WorldConfig, puzzle: Puzzle, answer_ids: list[int]) -> bool:
    """Sudoku: the whole board equals the (unique) solution; Countdown: the chain's arithmetic reaches the target.
    Anything after the first [EOS] must be [EOS] too."""
    eos = VOCABULARY.index("[EOS]")
    text = answer_text(answer_ids)
    if text is None or any(i != eos for i in answer_ids[len(text) :]):
        return False
    if config.task == "sudoku":
        return text == puzzle.solution
    return countdown.verify(puzzle.puzzle, text)


def save_split(path: Path, puzzles: list[Puzzle]) -> None:
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in puzzles))


def load_split(path: Path) -> list[Puzzle]:
    return [Puzzle(r["puzzle"], r["solution"]) for _, r in read_jsonl(path)]


def load_puzzle_file(path: Path, config: WorldConfig) -> list[Puzzle]:
    """User puzzles (JSONL, ``{"puzzle": ...}`` and optionally ``"solution"``), checked against the world: row
    length, vocabulary, and for Sudoku a unique solution (computed when not given)."""
    out = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        text = record.get("puzzle")
        if not isinstance(text, str):
            raise DataError(f"{where}: missing string field 'puzzle'")
        bad = sorted(set(text) - set(SYMBOLS))
        if bad:
            raise DataError(f"{where}: puzzle {text!r} has symbol {bad[0]!r} outside the vocabulary")
        try:
            if config.task == "sudoku":
                sudoku.parse_board(text, config.size)
                found = sudoku.solutions(text, config.size)
                if len(found) != 1:
                    raise DataError(f"{where}: puzzle {text!r} has {len(found)} solutions, not exactly one")
                solution = record.get("solution", found[0])
                if solution != found[0]:
                    raise DataError(f"{where}: solution {solution!r} is not the puzzle's solution")
            else:
                countdown.parse_puzzle(text)
                if len(text) > config.puzzle_length:
                    raise DataError(f"{where}: puzzle {text!r} is longer than {config.puzzle_length} characters")
                solution = record.get("solution", "")
        except ConfigError as exc:
            raise DataError(f"{where}: {exc}") from None
        out.append(Puzzle(text, solution))
    if not out:
        raise DataError(f"{path}: no puzzles")
    return out
