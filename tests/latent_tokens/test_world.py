"""The puzzle world: unique-solution Sudoku (checked against brute force), Countdown's verifier, disjoint seeded
splits, rows and the tokenizer, and grading that no malformed output can win."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from latent_darm.errors import ConfigError, DataError
from latent_darm.latent_tokens import countdown, sudoku
from latent_darm.latent_tokens.tasks import WorldConfig, encode_rows, generate_splits, grade, load_puzzle_file
from latent_darm.latent_tokens.tokenizer import VOCABULARY, puzzle_tokenizer


def _all_4x4_grids() -> list[str]:
    """Every solved 4×4 Sudoku by brute force over row permutations (independent of the package's solver)."""
    rows = list(itertools.permutations("1234"))
    grids = []
    for a, b, c, d in itertools.product(rows, repeat=4):
        g = [a, b, c, d]
        if any(len({g[r][col] for r in range(4)}) < 4 for col in range(4)):
            continue
        boxes = [{g[r][col] for r in rr for col in cc} for rr in ((0, 1), (2, 3)) for cc in ((0, 1), (2, 3))]
        if all(len(box) == 4 for box in boxes):
            grids.append("".join("".join(row) for row in g))
    return grids


def test_brute_force_finds_the_288_grids():
    assert len(_all_4x4_grids()) == 288


@pytest.mark.parametrize("givens", [4, 6, 8])
def test_generated_4x4_puzzles_have_exactly_one_solution_by_brute_force(givens):
    grids = _all_4x4_grids()
    rng = random.Random(givens)
    for _ in range(15):
        puzzle, solution = sudoku.generate_puzzle(4, givens, rng)
        assert sum(ch != "." for ch in puzzle) == givens
        matching = [g for g in grids if all(p in (".", s) for p, s in zip(puzzle, g, strict=True))]
        assert matching == [solution]


@pytest.mark.parametrize(("size", "givens"), [(6, 16), (9, 40)])
def test_larger_boards_are_unique_and_valid(size, givens):
    rng = random.Random(0)
    puzzle, solution = sudoku.generate_puzzle(size, givens, rng)
    assert sum(ch != "." for ch in puzzle) == givens
    assert sudoku.solutions(puzzle, size) == [solution]
    assert sudoku.is_solution(puzzle, solution, size)
    broken = solution[:-1] + ("1" if solution[-1] != "1" else "2")
    assert not sudoku.is_solution(puzzle, broken, size)


def test_solver_counts_several_solutions_of_an_ambiguous_board():
    assert len(sudoku.solutions("." * 16, 4, limit=5)) == 5
    assert sudoku.solutions("11" + "." * 14, 4) == []


def test_countdown_verifier_checks_the_arithmetic_not_a_reference():
    assert countdown.verify("2,6,9:108", "6*2=12;12*9=108;")
    assert countdown.verify("2,6,9:108", "9*2=18;18*6=108;")  # another valid chain
    assert not countdown.verify("2,6,9:108", "6*2=13;13*9=117;")  # wrong arithmetic
    assert not countdown.verify("2,6,9:108", "6*6=36;36*3=108;")  # 6 used twice, 3 not given
    assert not countdown.verify("2,6,9:108", "6*2=12;")  # does not reach the target
    assert not countdown.verify("2,6,9:108", "6*2=12;12*9=108")  # truncated
    assert not countdown.verify("2,6,9:3", "2-6=0;")  # negative
    rng = random.Random(1)
    for _ in range(50):
        puzzle, solution = countdown.generate_puzzle(3, 9, rng)
        assert countdown.verify(puzzle, solution)


def test_splits_are_seeded_and_disjoint_by_puzzle():
    config = WorldConfig(size=4, difficulty=6, train_size=300, test_size=50, seed=3)
    a, b = generate_splits(config), generate_splits(config)
    assert a == b
    train = {p.puzzle for p in a["train"]}
    test = {p.puzzle for p in a["test"]}
    assert len(train) == 300 and len(test) == 50 and not train & test
    other = generate_splits(WorldConfig(size=4, difficulty=6, train_size=300, test_size=50, seed=4))
    assert other != a


def test_rows_match_the_saved_hugging_face_tokenizer(tmp_path):
    for config in (WorldConfig(train_size=5, test_size=5), WorldConfig(task="countdown", size=3, difficulty=9,
                                                                        train_size=5, test_size=5)):  # fmt: skip
        puzzles = generate_splits(config)["test"]
        rows = encode_rows(config, puzzles)
        assert rows.shape == (5, config.row_length)
        puzzle_tokenizer().save_pretrained(tmp_path / "tok")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
        for row, p in zip(rows.tolist(), puzzles, strict=True):
            text = tokenizer.decode(row)
            assert text.replace("[PAD]", "").startswith(f"[BOS]{p.puzzle}[SEP]{p.solution}[EOS]")
            assert tokenizer(text, add_special_tokens=False)["input_ids"] == row


def test_grading_rejects_malformed_answers():
    config = WorldConfig(train_size=5, test_size=5)
    p = generate_splits(config)["test"][0]
    ids = encode_rows(config, [p])[0, config.prompt_length :].tolist()
    eos, mask = VOCABULARY.index("[EOS]"), VOCABULARY.index("[MASK]")
    assert grade(config, p, ids)
    assert not grade(config, p, [*ids[:-1], mask])  # no [EOS]: truncated
    assert not grade(config, p, [mask, *ids[1:]])  # a mask left in the board
    wrong = list(ids)
    wrong[0] = VOCABULARY.index("1") if VOCABULARY[ids[0]] != "1" else VOCABULARY.index("2")
    assert not grade(config, p, wrong)
    short = ids[:5] + [eos] * (len(ids) - 5)
    assert not grade(config, p, short)


def test_puzzle_file_errors_name_the_line_and_value(tmp_path):
    config = WorldConfig(train_size=5, test_size=5)
    path = tmp_path / "p.jsonl"
    path.write_text('{"puzzle": "1.3"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:1: .*'1.3'.*3 cells"):
        load_puzzle_file(path, config)
    path.write_text('{"puzzle": "1...............x"}\n'.replace("x", "") + '{"puzzle": "a..............."}\n')
    with pytest.raises(DataError, match=r"p.jsonl:[12]: "):
        load_puzzle_file(path, config)
    path.write_text('{"puzzle": "a..............."}\n')
    with pytest.raises(DataError, match=r"symbol 'a' outside the vocabulary"):
        load_puzzle_file(path, config)
    path.write_text('{"puzzle": "5..............."}\n')
    with pytest.raises(DataError, match=r"symbol '5' outside 1..4"):
        load_puzzle_file(path, config)
    good = generate_splits(config)["test"][0]
    path.write_text(f'{{"puzzle": "{good.puzzle}"}}\n')
    assert load_puzzle_file(path, config)[0].solution == good.solution


def test_bad_world_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="'chess'"):
        WorldConfig(task="chess")
    with pytest.raises(ConfigError, match="size 5"):
        WorldConfig(size=5)


HIDDEN_CLASH = "........9.....9.....1...................5.....9.........................9........"  # box 1 has no 9


def test_the_solver_search_is_bounded_by_a_node_budget():
    with pytest.raises(ConfigError, match=r"could not solve Sudoku .* budget of 5,000 search nodes"):
        sudoku.solutions(HIDDEN_CLASH, 9, budget=5_000)
    # generation: every try of one puzzle spends from one budget, so an impossible difficulty ends, and the same
    # way each time (a count of nodes, not a clock)
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"9×9 Sudoku with 17 givens within the solver's budget of 20,000"):
            sudoku.generate_puzzle(9, 17, random.Random(0), budget=20_000)
    puzzle, solution = sudoku.generate_puzzle(9, 30, random.Random(0))  # a feasible one is unaffected
    assert sudoku.solutions(puzzle, 9) == [solution]


def test_the_default_budget_ends_a_17_clue_generation_in_seconds():
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"17 givens within the solver's budget of 200,000 search nodes"):
        sudoku.generate_puzzle(9, 17, random.Random(0))
    assert time.perf_counter() - started < 60
