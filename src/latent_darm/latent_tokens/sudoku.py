"""Sudoku boards of side 4, 6 or 9: a counting solver and a seeded generator of puzzles with exactly one solution.

Boards are strings of ``size²`` characters in row-major order, digits ``1..size`` and ``.`` for a blank. The
generator fills a random solved grid, then blanks cells in a random order, keeping a blank only if the puzzle
still has exactly one solution, until ``givens`` cells remain; grids where that gets stuck are redrawn. The
number of givens is the difficulty (fewer givens: later cells depend jointly on more of the others).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from latent_darm.errors import ConfigError

BLANK = "."
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # box rows × box columns


@dataclass(frozen=True)
class Geometry:
    """Which cells share a row, column or box."""

    size: int
    peers: tuple[tuple[int, ...], ...]

    @property
    def cells(self) -> int:
        return self.size * self.size


_GEOMETRIES: dict[int, Geometry] = {}


def geometry(size: int) -> Geometry:
    if size not in BOXES:
        raise ConfigError(f"unsupported Sudoku size {size}; expected one of {', '.join(map(str, BOXES))}")
    if size not in _GEOMETRIES:
        box_rows, box_cols = BOXES[size]
        peers = []
        for cell in range(size * size):
            r, c = divmod(cell, size)
            same = set()
            for other in range(size * size):
                r2, c2 = divmod(other, size)
                if other != cell and (
                    r2 == r or c2 == c or (r2 // box_rows == r // box_rows and c2 // box_cols == c // box_cols)
                ):
                    same.add(other)
            peers.append(tuple(sorted(same)))
        _GEOMETRIES[size] = Geometry(size, tuple(peers))
    return _GEOMETRIES[size]


def _candidates(grid: list[int], cell: int, geo: Geometry) -> int:
    """Bitmask of the digits (bit d-1 for digit d) that ``cell`` may still take."""
    used = 0
    for peer in geo.peers[cell]:
        if grid[peer]:
            used |= 1 << (grid[peer] - 1)
    return ~used & ((1 << geo.size) - 1)


# Search nodes one solver call (a solve, or one puzzle's generation) may visit. A node budget, not a time limit,
# so a board that needs too much search is refused the same way on every machine and results stay reproducible.
# Real puzzles need far fewer (a 9×9 with 26 givens: ~4,000 nodes to generate); ~8 µs a node.
NODE_BUDGET = 200_000


class SearchBudgetExceeded(Exception):
    """The solver visited more than its node budget."""


@dataclass
class Budget:
    """Nodes left to a search; shared by every search of one solve or one generated puzzle."""

    nodes: int = NODE_BUDGET

    def spend(self) -> None:
        self.nodes -= 1
        if self.nodes < 0:
            raise SearchBudgetExceeded


def _search(
    grid: list[int],
    geo: Geometry,
    limit: int,
    rng: random.Random | None,
    found: list[list[int]],
    budget: Budget | None = None,
) -> None:
    """Depth-first search on the blank cell with fewest candidates; stops once ``limit`` solutions are found.
    Raises SearchBudgetExceeded once ``budget`` runs out."""
    if budget is not None:
        budget.spend()
    best, best_mask, best_count = -1, 0, geo.size + 1
    for cell, value in enumerate(grid):
        if value == 0:
            mask = _candidates(grid, cell, geo)
            count = mask.bit_count()
            if count < best_count:
                best, best_mask, best_count = cell, mask, count
                if count <= 1:
                    break
    if best < 0:
        found.append(list(grid))
        return
    digits = [d + 1 for d in range(geo.size) if best_mask >> d & 1]
    if rng is not None:
        rng.shuffle(digits)
    for digit in digits:
        grid[best] = digit
        _search(grid, geo, limit, rng, found, budget)
        if len(found) >= limit:
            break
    grid[best] = 0


def parse_board(board: str, size: int) -> list[int]:
    """Digits of ``board`` (0 for blank); a one-line error for a wrong length or symbol."""
    geo = geometry(size)
    if len(board) != geo.cells:
        raise ConfigError(f"Sudoku board {board!r} has {len(board)} cells; a {size}×{size} board has {geo.cells}")
    allowed = {BLANK, *(str(d) for d in range(1, size + 1))}
    bad = sorted(set(board) - allowed)
    if bad:
        raise ConfigError(f"Sudoku board {board!r} has symbol {bad[0]!r} outside 1..{size} and {BLANK!r}")
    return [0 if ch == BLANK else int(ch) for ch in board]


def format_board(grid: list[int]) -> str:
    return "".join(BLANK if v == 0 else str(v) for v in grid)


def solutions(board: str, size: int, limit: int = 2, budget: int | None = None) -> list[str]:
    """Up to ``limit`` solutions of ``board`` (a puzzle with clashing givens has none). A ConfigError when the
    search needs more than ``budget`` nodes (default :data:`NODE_BUDGET`)."""
    geo = geometry(size)
    grid = parse_board(board, size)
    for cell, value in enumerate(grid):
        if value and any(grid[p] == value for p in geo.peers[cell]):
            return []
    found: list[list[int]] = []
    nodes = NODE_BUDGET if budget is None else budget
    try:
        _search(grid, geo, limit, None, found, Budget(nodes))
    except SearchBudgetExceeded:
        raise ConfigError(
            f"could not solve Sudoku {board!r} within the solver's budget of {nodes:,} search nodes"
            " (it may have no solution)"
        ) from None
    return [format_board(g) for g in found]


def is_solution(puzzle: str, candidate: str, size: int) -> bool:
    """``candidate`` fills every blank of ``puzzle``, keeps its givens and breaks no row, column or box."""
    if len(candidate) != len(puzzle) or BLANK in candidate:
        return False
    if any(p != BLANK and p != c for p, c in zip(puzzle, candidate, strict=True)):
        return False
    return solutions(candidate, size, limit=1) == [candidate] if set(candidate) <= set("123456789") else False


def random_grid(size: int, rng: random.Random, budget: Budget | None = None) -> list[int]:
    geo = geometry(size)
    found: list[list[int]] = []
    _search([0] * geo.cells, geo, 1, rng, found, budget)
    return found[0]


def generate_puzzle(
    size: int, givens: int, rng: random.Random, max_tries: int = 200, budget: int | None = None
) -> tuple[str, str]:
    """(puzzle, solution) with exactly ``givens`` givens and a unique solution; a ConfigError when the tries or the
    node budget (all tries together, default :data:`NODE_BUDGET`) run out."""
    geo = geometry(size)
    if not 0 < givens <= geo.cells:
        raise ConfigError(f"givens={givens} is outside 1..{geo.cells} for a {size}×{size} board")
    nodes = NODE_BUDGET if budget is None else budget
    try:
        return _generate(geo, givens, rng, max_tries, Budget(nodes))
    except SearchBudgetExceeded:
        raise ConfigError(
            f"could not make a {size}×{size} Sudoku with {givens} givens within the solver's budget of {nodes:,}"
            " search nodes; use more givens (--difficulty)"
        ) from None


def _generate(geo: Geometry, givens: int, rng: random.Random, max_tries: int, budget: Budget) -> tuple[str, str]:
    size = geo.size
    for _ in range(max_tries):
        solution = random_grid(size, rng, budget)
        grid = list(solution)
        order = list(range(geo.cells))
        rng.shuffle(order)
        remaining = geo.cells
        for cell in order:
            if remaining == givens:
                break
            value, grid[cell] = grid[cell], 0
            count: list[list[int]] = []
            _search(list(grid), geo, 2, None, count, budget)
            if len(count) == 1:
                remaining -= 1
            else:
                grid[cell] = value
        if remaining == givens:
            return format_board(grid), format_board(solution)
    raise ConfigError(
        f"could not make a {size}×{size} Sudoku with a unique solution from {givens} givens; use more (--difficulty)"
    )
