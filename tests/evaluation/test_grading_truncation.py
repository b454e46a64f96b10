"""What a real model exposed in grading: truncated outputs get no unanchored guess, an empty box is no answer, a
sign before a currency sign stays, and adversarial outputs grade in bounded time (or are marked ungradable)."""

from __future__ import annotations

import time

import pytest

from latent_darm import grading
from latent_darm.grading import extract_answer, grade


@pytest.mark.parametrize(
    ("text", "gold"),
    [
        ("Step 10: 3 + 4 = 7 apples\n\n11. Now we", "11"),  # a cut-off step label is not an answer
        ("So she has 5 + 6 = 11", "11"),  # the number a cut sentence ends on may be incomplete (…= 118)
        ("The answer is 1", "1"),  # "The answer is 1" of "…is 18": a phrase running to the end is cut
        ("Therefore:\n#### 4", "4"),  # likewise a #### line that the budget may have cut
        ("12", "12"),  # even a bare reply: the budget ran out, it may continue
    ],
)
def test_truncated_outputs_get_no_unanchored_fallback(text, gold):
    assert grade(text, gold, "math").correct  # complete outputs: read as before
    truncated = grade(text, gold, "math", truncated=True)
    assert truncated == grading.Grade(correct=False, extracted=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("First 3 + 4 = 7. The answer is 7. Then the next question", "7"),
        ("So the total is \\boxed{42} and then we check that 42", "42"),
        ("Answer: C. Now let us check the others", None),  # multiple choice, see below
    ],
)
def test_truncated_outputs_keep_complete_anchored_answers(text, expected):
    if expected is None:
        assert extract_answer(text, "mc", truncated=True) == "C"
    else:
        assert extract_answer(text, "math", truncated=True) == expected


@pytest.mark.parametrize("text", ["\\boxed{}", "The answer is \\boxed{ }.", "I think \\boxed{5}. Final: \\boxed{}"])
def test_an_empty_box_is_no_answer(text):
    assert extract_answer(text, "math") is None
    assert not grade(text, "5", "math").correct


@pytest.mark.parametrize(
    ("text", "gold"),
    [
        ("He lost -$60,000 overall", "-60000"),
        ("-$60,000", "-60000"),
        ("The company's change in value was -$1,250.50 this year, in total, after all", "-1250.50"),
        ("The balance is −\\$40.", "-40"),
    ],
)
def test_a_sign_before_a_currency_sign_is_kept(text, gold):
    result = grade(text, gold, "math")
    assert result.correct, result
    assert not grade(text, gold.lstrip("-"), "math").correct


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 20_000,
        "\\boxed{" * 20_000 + "1" + "}" * 20_000,
        "The answer is {" * 20_000,
        "answer: \\boxed{" * 20_000,
        " " * 100_000 + "x",
        "\\framebox[" * 20_000,
        "#### " * 20_000,
    ],
)
@pytest.mark.parametrize("answer_type", ["math", "mc"])
def test_adversarial_predictions_grade_in_bounded_time(text, answer_type):
    """Issue 11 item 12: 20,000 nested ``\\boxed{`` took over 300 s; extraction is now linear."""
    started = time.perf_counter()
    grade(text, "1" if answer_type == "math" else "A", answer_type)
    # ~0.1-2 s each on an idle core; the quadratic extraction took minutes (a generous bound for a busy machine).
    assert time.perf_counter() - started < 30


def test_past_the_item_time_limit_an_item_is_ungradable(monkeypatch):
    """The limit covers math-verify's calls; a symbolic comparison after it has passed is not started."""
    assert grade("\\frac{\\pi}{2}", "\\pi/2", "math").correct  # needs math-verify
    grading._parse.cache_clear()
    monkeypatch.setattr(grading, "ITEM_TIME_LIMIT_S", 0)
    result = grade("\\frac{\\pi}{2}", "\\pi/2", "math")
    assert result.ungradable and not result.correct and result.extracted == "\\frac{\\pi}{2}"
    monkeypatch.undo()
    long = grade("\\boxed{" + "\\sqrt{2}" * 1000 + "}", "2", "math")  # an absurdly long answer is not compared
    assert long.ungradable and not long.correct and len(long.extracted) < 200
