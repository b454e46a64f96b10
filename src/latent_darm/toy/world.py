"""The toy world: chains of variable definitions, listed out of order, where planning is the hard part.

A level-k problem defines k + 1 variables: one is a number, each other one is the previous variable plus or minus
a number, and the definitions are shuffled (``shuffle=False`` lists them in dependency order)::

    Let c = b + 4. Let a = 7. Let b = a - 2. What is c?

Answering directly means following k hops and doing k additions in one go — which a tiny model cannot do on
high levels. The gold plan puts the steps in dependency order and works out every intermediate value, but stops
short of the final one (the planner must not reveal the answer)::

    b = 7 - 2 = 5. c = 5 + 4.

Each step has its source's value substituted, so an executor given the plan has exactly one addition left, right
there in the last step — reading a plan is easy, writing one is the work. The chain of thought is the plan with
the final value filled in. Values stay in ``[0, value_range)`` (no step leaves that range), so numbers are single
tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from latent_darm.errors import ConfigError, DataError
from latent_darm.pipelines.prompts import PromptTemplates

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
# Bump when the generator, the text formats or the training recipe change meaning: old caches then go stale.
WORLD_VERSION = "toy-chains-2"
# Share of the question space (by hash of the question text) that each split may draw from.
_SPLIT_SHARES = {"test": (0, 10), "validation": (10, 20), "train": (20, 100)}
_NAMES = string.ascii_lowercase


@dataclass(frozen=True)
class Mixture:
    """Expected number of training examples per training problem, by task (fractions are drawn at random)."""

    plan: float = 0.0  # planner prompt → plan
    execute: float = 0.0  # text-executor prompt with the gold plan → \boxed{answer}
    direct: float = 0.0  # direct prompt → \boxed{answer}
    cot: float = 0.0  # chain-of-thought prompt → worked steps, then \boxed{answer}


@dataclass(frozen=True)
class ModelSpec:
    """Size and training budget of one toy model."""

    d_model: int
    layers: int
    heads: int
    kv_heads: int
    mlp_hidden: int
    steps: int
    batch_size: int
    lr: float
    mixture: Mixture = field(default_factory=Mixture)
    # Causal models only: weight of the loss on prompt tokens. From-scratch models learn the world's arithmetic much
    # sooner with language-model signal on the plans and questions they read; 0 is plain SFT.
    prompt_loss_weight: float = 0.0


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the toy world's data and models; its fingerprint keys the build cache.

    ``plan_length`` is the planner's response canvas in training and the ``gen_length`` to sample plans with;
    ``answer_length`` the canvas for the planner's short answers (when it acts as executor).
    """

    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    train_per_level: int = 3000
    validation_per_level: int = 20
    test_per_level: int = 40
    value_range: int = 10
    shuffle: bool = True
    seed: int = 0
    plan_length: int = 40
    answer_length: int = 16
    block_length: int = 8
    planner: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            d_model=96, layers=3, heads=4, kv_heads=4, mlp_hidden=256, steps=1200, batch_size=32, lr=3e-3,
            mixture=Mixture(plan=1.0, execute=0.5, direct=0.25),
        )
    )  # fmt: skip
    executor: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            d_model=96, layers=3, heads=4, kv_heads=2, mlp_hidden=256, steps=1200, batch_size=32, lr=3e-3,
            mixture=Mixture(plan=0.5, execute=1.0, direct=0.5, cot=1.0), prompt_loss_weight=0.5,
        )
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not self.levels or any(not isinstance(k, int) or k < 1 for k in self.levels):
            raise ConfigError(f"levels must be positive integers, got {self.levels!r}")
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"levels must not repeat, got {self.levels!r}")
        if max(self.levels) + 1 > len(_NAMES):
            raise ConfigError(f"level {max(self.levels)} needs more than {len(_NAMES)} variable names")
        if not 3 <= self.value_range <= 100:
            raise ConfigError(f"value_range must be in [3, 100], got {self.value_range}")
        if self.plan_length % self.block_length:
            raise ConfigError(f"plan_length {self.plan_length} is not divisible by block_length {self.block_length}")

    def fingerprint(self) -> str:
        """Stable hash of the settings, the world version and the default prompt templates (the models learn
        those prompts, so a change to them invalidates a cache too)."""
        payload = {"version": WORLD_VERSION, "config": asdict(self), "templates": PromptTemplates().to_dict()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def split_size(self, split: Split) -> int:
        return {"train": self.train_per_level, "validation": self.validation_per_level, "test": self.test_per_level}[
            split
        ]


def quick_config(seed: int = 0) -> WorldConfig:
    """A small world for tests and ``--quick``: three levels, small models, a few seconds of training each."""
    return WorldConfig(
        levels=(1, 2, 3),
        train_per_level=400,
        validation_per_level=8,
        test_per_level=8,
        value_range=6,
        seed=seed,
        plan_length=24,
        answer_length=16,
        block_length=8,
        planner=ModelSpec(
            d_model=64, layers=2, heads=4, kv_heads=4, mlp_hidden=128, steps=60, batch_size=16, lr=3e-3,
            mixture=Mixture(plan=1.0, execute=0.5, direct=0.25),
        ),
        executor=ModelSpec(
            d_model=64, layers=2, heads=4, kv_heads=2, mlp_hidden=128, steps=60, batch_size=16, lr=3e-3,
            mixture=Mixture(plan=0.5, execute=1.0, direct=0.5, cot=1.0), prompt_loss_weight=0.5,
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class ToyProblem:
    """One problem. ``plan`` stops short of the final value; ``chain_of_thought`` is the full worked solution."""

    id: str
    level: int
    question: str
    plan: str
    answer: int
    chain_of_thought: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _Step:
    name: str
    source: str | None  # the variable this one is computed from; None for the starting number
    start: int  # the source's value (the number itself for the starting step)
    op: str  # "+" or "-" ("" for the starting number)
    operand: int
    value: int

    def definition(self) -> str:
        """As the question states it: ``b = a - 2``."""
        return (
            f"{self.name} = {self.start}"
            if self.source is None
            else f"{self.name} = {self.source} {self.op} {self.operand}"
        )

    def worked(self, with_value: bool = True) -> str:
        """As a plan states it, the source's value substituted: ``b = 7 - 2 = 5.`` (or ``b = 7 - 2.``)."""
        if self.source is None:
            return f"{self.name} = {self.start}."
        text = f"{self.name} = {self.start} {self.op} {self.operand}"
        return f"{text} = {self.value}." if with_value else f"{text}."


def _chain(rng: random.Random, level: int, value_range: int) -> list[_Step]:
    names = rng.sample(_NAMES, level + 1)
    value = rng.randrange(value_range)
    steps = [_Step(names[0], None, value, "", 0, value)]
    for name in names[1:]:
        # The next value is uniform over the other values, so answers are uniform and no step leaves the range.
        target = rng.choice([v for v in range(value_range) if v != value])
        op, operand = ("+", target - value) if target > value else ("-", value - target)
        steps.append(_Step(name, steps[-1].name, value, op, operand, target))
        value = target
    return steps


def _texts(steps: list[_Step], order: list[int]) -> tuple[str, str, str]:
    """(question, plan, chain of thought) for a chain whose definitions are listed in ``order``. The starting number
    is in the question already, so plans and chains of thought begin with the first step that computes."""
    definitions = " ".join(f"Let {steps[i].definition()}." for i in order)
    question = f"{definitions} What is {steps[-1].name}?"
    plan = " ".join([s.worked() for s in steps[1:-1]] + [steps[-1].worked(with_value=False)])
    return question, plan, " ".join(s.worked() for s in steps[1:])


def make_problem(rng: random.Random, level: int, value_range: int, shuffle: bool = True) -> ToyProblem:
    """A fresh random problem of ``level`` steps (the id is filled in by :func:`generate_split`); ``shuffle``
    lists the definitions out of order (else in dependency order)."""
    steps = _chain(rng, level, value_range)
    order = list(range(len(steps)))
    if shuffle:
        rng.shuffle(order)
    question, plan, cot = _texts(steps, order)
    return ToyProblem("", level, question, plan, steps[-1].value, cot)


def split_of(question: str, seed: int) -> Split:
    """The split a question belongs to, by a seeded hash of its text: the splits can never share a question."""
    bucket = int(hashlib.sha256(f"{seed}:{question}".encode()).hexdigest()[:8], 16) % 100
    return next(name for name, (lo, hi) in _SPLIT_SHARES.items() if lo <= bucket < hi)


def generate_split(
    split: Split, n_per_level: int, levels: tuple[int, ...], seed: int, value_range: int = 10, shuffle: bool = True
) -> list[ToyProblem]:
    """``n_per_level`` distinct problems per level for ``split``, ordered by level; same seed → same problems."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    problems: list[ToyProblem] = []
    for level in levels:
        rng = random.Random(f"{seed}:{split}:{level}")
        seen: set[str] = set()
        attempts = 0
        while len(seen) < n_per_level:
            attempts += 1
            if attempts > 200 * n_per_level + 1000:
                raise ConfigError(f"level {level}: cannot find {n_per_level} distinct {split} problems")
            problem = make_problem(rng, level, value_range, shuffle)
            if problem.question in seen or split_of(problem.question, seed) != split:
                continue
            seen.add(problem.question)
            problems.append(replace(problem, id=f"toy-{split}-L{level}-{len(seen) - 1:05d}"))
    return problems


def generate_world(config: WorldConfig) -> dict[Split, list[ToyProblem]]:
    """All three splits of ``config``'s world."""
    return {
        split: generate_split(
            split, config.split_size(split), config.levels, config.seed, config.value_range, config.shuffle
        )
        for split in SPLITS
    }


# ----------------------------------------------------------------------------------------------------------------
# Checking: solve questions and execute plans from their text alone
# ----------------------------------------------------------------------------------------------------------------

_STATEMENT = re.compile(r"^([a-z]) = (?:(\d+)|([a-z])) ?(?:([+-]) (\d+))?(?: = (\d+))?$")


def _parse(statement: str, where: str) -> tuple[str, str, str, int, int | None]:
    """``x = y + 3 = 5`` → (name, left operand text, op or "", right operand, stated value or None)."""
    match = _STATEMENT.match(statement.strip())
    if match is None:
        raise DataError(f"{where}: cannot parse {statement.strip()!r}")
    name, number, source, op, operand, stated = match.groups()
    if op is None and source is not None:
        raise DataError(f"{where}: cannot parse {statement.strip()!r}")
    return name, number or source, op or "", int(operand or 0), None if stated is None else int(stated)


def _statements(text: str) -> list[str]:
    return [s for s in text.strip().split(".") if s.strip()]


def _apply(value: int, op: str, operand: int) -> int:
    return value - operand if op == "-" else value + operand


def _definitions(question: str) -> tuple[dict[str, tuple[str, str, int]], str]:
    match = re.fullmatch(r"(.*) What is ([a-z])\?", question.strip())
    if match is None:
        raise DataError(f"not a toy question: {question!r}")
    body, target = match.groups()
    definitions = {}
    for statement in _statements(body):
        name, left, op, operand, _ = _parse(statement.strip().removeprefix("Let "), "question")
        definitions[name] = (left, op, operand)
    return definitions, target


def solve_question(question: str) -> int:
    """The answer to a toy question, by resolving its definitions (no plan involved)."""
    definitions, target = _definitions(question)

    def value(name: str, depth: int = 0) -> int:
        if name not in definitions or depth > len(definitions):
            raise DataError(f"question does not define {name!r} (or defines it in a cycle)")
        left, op, operand = definitions[name]
        return int(left) if left.isdigit() else _apply(value(left, depth + 1), op, operand)

    return value(target)


def execute_plan(plan: str, question: str) -> int:
    """Check a plan (or chain of thought) against its question and return the value of its last variable.

    Every statement must be the question's definition of that variable with the source's value — worked out by an
    earlier statement — substituted, and every stated value must be right; otherwise :class:`DataError`.
    """
    definitions, _ = _definitions(question)
    values = {name: int(left) for name, (left, op, _) in definitions.items() if not op}
    last = None
    for statement in _statements(plan):
        name, left, op, operand, stated = _parse(statement, "plan")
        if name not in definitions:
            raise DataError(f"plan defines {name!r}, which the question does not")
        source, source_op, source_operand = definitions[name]
        if source_op and source not in values:
            raise DataError(f"plan computes {name!r} before {source!r}")
        expected = str(values[source]) if source_op else source
        if left != expected or (op, operand) != (source_op, source_operand):
            raise DataError(f"plan step {statement.strip()!r} does not match the question's definition of {name}")
        value = _apply(int(left), op, operand) if op else int(left)
        if stated is not None and stated != value:
            raise DataError(f"plan states {name} = {stated}, but it is {value}")
        values[name], last = value, name
    if last is None:
        raise DataError("empty plan")
    return values[last]
