"""Countdown: reach a target from a few numbers with + − × ÷, each number used at most once.

A puzzle is ``"a,b,c:target"``; a solution is a chain of steps ``"x+y=z;"`` where each step combines two numbers
still available (the givens and earlier results) into a new one and the last result is the target. Division must
be exact and subtraction non-negative. Any valid chain is correct: :func:`verify` checks the arithmetic, not a
reference answer. The generator draws numbers, combines all of them in a random order with random operations
(keeping intermediate values integral and within ``max_value``) and records that chain as the reference.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from latent_darm.errors import ConfigError

OPERATIONS = "+-*/"
STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")


def apply(a: int, op: str, b: int) -> int | None:
    """``a op b`` under Countdown's rules, or None when not allowed (negative or inexact)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b and a % b == 0 else None
    raise ValueError(op)


def parse_puzzle(puzzle: str) -> tuple[list[int], int]:
    """``"a,b,c:target"`` → ([a, b, c], target); a one-line error otherwise."""
    match = re.fullmatch(r"(\d+(?:,\d+)*):(\d+)", puzzle)
    if match is None:
        raise ConfigError(f"Countdown puzzle {puzzle!r} is not of the form 'a,b,c:target'")
    return [int(x) for x in match.group(1).split(",")], int(match.group(2))


def verify(puzzle: str, solution: str) -> bool:
    """Whether ``solution`` reaches the target with valid steps; a malformed chain is simply wrong."""
    numbers, target = parse_puzzle(puzzle)
    pool = Counter(numbers)
    steps = [s for s in solution.split(";") if s]
    if not steps or not solution.endswith(";"):
        return False
    result = None
    for step in steps:
        match = STEP.match(step)
        if match is None:
            return False
        a, op, b, claimed = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
        pool[a] -= 1
        pool[b] -= 1
        if pool[a] < 0 or pool[b] < 0 or apply(a, op, b) != claimed:
            return False
        pool[claimed] += 1
        result = claimed
    return result == target


def generate_puzzle(count: int, max_number: int, rng: random.Random, max_value: int = 999) -> tuple[str, str]:
    """(puzzle, reference solution) combining ``count`` numbers in 1..``max_number``."""
    if count < 2 or max_number < 1:
        raise ConfigError(f"Countdown needs at least 2 numbers and max_number ≥ 1; got {count} and {max_number}")
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(count)]
        pool = list(numbers)
        steps = []
        while len(pool) > 1:
            a, b = rng.sample(range(len(pool)), 2)
            x, y = pool[a], pool[b]
            if x < y:
                x, y = y, x
            op = rng.choice(OPERATIONS)
            value = apply(x, op, y)
            if value is None or value > max_value or (op == "*" and 1 in (x, y)) or (op == "/" and y == 1):
                break
            steps.append(f"{x}{op}{y}={value};")
            pool = [v for i, v in enumerate(pool) if i not in (a, b)] + [value]
        if len(pool) == 1 and pool[0] not in numbers:
            return f"{','.join(map(str, numbers))}:{pool[0]}", "".join(steps)
