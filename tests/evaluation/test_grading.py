"""Grading: real gold answers grade correct against themselves in the forms models write; near misses do not."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from latent_darm import grading
from latent_darm.errors import DataError
from latent_darm.evaluation.benchmarks import Example, load_benchmark
from latent_darm.grading import Grade, answers_match, extract_answer, grade, symbolic_equal
from tests.conftest import BENCHMARKS, needs_benchmarks

needs_data = needs_benchmarks

SELF_CONSISTENCY = ["math", "math500", "gsm8k", "aime24", "amc23", "minerva_math", "olympiadbench", "mmlu_stem"]
# Gold answers that are prose with side conditions: a sentence restating them is cut at "where", by design (the
# cut is what stops "The answer is 5, since ..." from swallowing the explanation). Only their sentence forms skip.
PROSE_GOLDS = {("olympiadbench", "1965")}  # "f(x)=a x+b, where b is an arbitrary integer, and a is ..."


def sample(name: str, n: int | None = None) -> list[Example]:
    return load_benchmark(name, data_dir=BENCHMARKS, seed=0, limit=n)


def written_forms(gold: str, answer_type: str) -> dict[str, str]:
    """How models state a final answer."""
    if answer_type == "mc":
        return {
            "answer": f"Answer: {gold}",
            "paren": f"({gold})",
            "boxed": f"\\boxed{{{gold}}}",
            "sentence": f"After eliminating the others, the answer is {gold}.",
            "bare": gold,
            "with_text": f"{gold}. the option text",
        }
    forms = {
        "boxed": f"Working omitted. So the final answer is $\\boxed{{{gold}}}$.",
        "sentence": f"The answer is {gold}.",
        "sentence_math": f"Final Answer: The final answer is ${gold}$. I hope it is correct.",
        "bare": gold,
    }
    if re.fullmatch(r"-?\d+(?:\.\d+)?", gold):
        forms["dollars"] = f"${gold} dollars"
        forms["hashes"] = f"She makes 3 * 2 = 6 more.\n#### {gold}"
        if re.fullmatch(r"\d{4,}", gold):
            forms["commas"] = f"The total is {int(gold):,}."
    return forms


@needs_data
@pytest.mark.parametrize("name", SELF_CONSISTENCY)
def test_real_golds_grade_correct_against_themselves(name):
    examples = sample(name)  # every row: the string shortcut keeps this to a few seconds
    failures = []
    total = 0
    for example in examples:
        for form, text in written_forms(example.gold, example.answer_type).items():
            if (name, example.id) in PROSE_GOLDS and form.startswith("sentence"):
                continue
            total += 1
            result = grade(text, example.gold, example.answer_type)
            if not result.correct:
                failures.append((example.id, form, example.gold, result.extracted))
    assert total >= 4 * len(examples) - 2
    assert not failures, f"{len(failures)}/{total} self-grades failed: {failures[:10]}"


@needs_data
@pytest.mark.parametrize("name", ["math", "math500", "minerva_math", "olympiadbench"])
def test_real_golds_match_when_written_as_an_assignment(name):
    """``\\boxed{x = <gold>}`` misses the string shortcut, so numbers and math-verify must carry it."""
    golds = [e.gold for e in sample(name, 150) if "=" not in e.gold and not e.gold.startswith("\\text")]
    failures = [gold for gold in golds if not grade(f"\\boxed{{x = {gold}}}", gold, "math").correct]
    assert len(golds) > 100 and not failures


@needs_data
@pytest.mark.parametrize("name", ["math", "math500", "minerva_math", "olympiadbench", "aime24", "amc23", "gsm8k"])
def test_math_verify_parses_and_self_verifies_real_golds(name):
    """The symbolic path on its own (no string shortcut): every gold parses and equals itself."""
    golds = [grading.normalize_math(example.gold) for example in sample(name, 40)]
    failures = [gold for gold in golds if not symbolic_equal(gold, gold)]
    assert not failures


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{\\sqrt{3}}{2}}$ is the value", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{1}, then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{12}", "12"),
        ("hence \\boxed 5", "5"),
        ("The final answer is $-\\frac{1}{2}$. I hope it is correct.", "-\\frac{1}{2}"),
        ("**Answer:** 7", "7"),
        ("Answer: x^2 + 1\nExplanation: expand.", "x^2 + 1"),
        ("He earns 5 * 4 = 20.\n#### 1,234", "1,234"),
        ("She had 10, gave away 3, so 7 remain at the end of the long day", "7"),
        ("The answer is 12 apples, since 3 * 4 = 12.", "12 apples"),
        ("\\boxed{} is where it goes; the answer is 9.", "9"),
        ("\\boxed{\\frac{1}{2", "\\boxed{\\frac{1}{2"),
        ("", None),
        ("No numbers here at all, sorry, none whatsoever.", None),
    ],
)
def test_math_extraction(text, expected):
    assert extract_answer(text, "math") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: C", "C"),
        ("(C)", "C"),
        ("\\boxed{C}", "C"),
        ("$\\boxed{\\text{(B)}}$", "B"),
        ("The answer is D.", "D"),
        ("The correct option is (E) because of friction.", "E"),
        ("B", "B"),
        ("b", "B"),
        ("C. Mitochondria", "C"),
        ("B is correct.", "B"),
        ("Let me think. A is wrong and so is B. Answer: D", "D"),
        ("A ball rolls down the hill, so it speeds up.", None),
        ("I think it is Carbon.", None),
        ("Answer: Carbon", None),
        ("J", "J"),
        ("K", None),
    ],
)
def test_letter_extraction(text, expected):
    assert extract_answer(text, "mc") == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "answer_type"),
    [
        ("\\boxed{17}", "18", "math"),
        ("\\boxed{-5}", "5", "math"),
        ("\\boxed{2}", "\\frac{1}{2}", "math"),
        ("\\boxed{\\frac{1}{2}}", "2", "math"),
        ("\\boxed{2\\sqrt{3}}", "3\\sqrt{2}", "math"),
        ("\\boxed{x^2-1}", "x^2+1", "math"),
        ("\\boxed{(3, 1)}", "(1, 3)", "math"),
        ("\\boxed{[2, 12]}", "(2, 12)", "math"),
        ("\\boxed{0.33}", "\\frac{1}{3}", "math"),
        ("\\boxed{\\frac{\\pi}{2}}", "\\pi", "math"),
        ("The answer is 1000.", "100", "math"),
        ("The total is 1,234.", "1234.5", "math"),
        ("$18.50", "18", "math"),
        ("12 apples", "120", "math"),
        ("Recall the example $\\boxed{2}$ from the question. The final answer is 3.", "2", "math"),
        ("\\boxed{2}. The final answer is 3.", "2", "math"),
        ("She makes 9 * 2 = 18.\n#### 17", "18", "integer"),
        ("\\boxed{240}", "024", "integer"),
        ("\\boxed{4.6e33}", "4.5e33", "math"),
        ("Answer: B", "C", "mc"),
        ("(B)", "C", "mc"),
        ("\\boxed{D}", "C", "mc"),
        ("A ball is heavier than air.", "A", "mc"),
        ("The answer is not C.", "C", "mc"),
    ],
)
def test_near_misses_grade_wrong(prediction, gold, answer_type):
    assert not grade(prediction, gold, answer_type).correct


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{9}{7}", "\\frac{9}{7}"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("\\$1,000,000", "1000000"),
        ("90", "90^\\circ"),
        ("30\\%", "30"),
        ("5\\text{ cm}", "5"),
        ("27.0", "27"),
        ("x = 5", "5"),
        ("4.5 \\times 10^{33}", "4.5e33"),
        ("(1,2) \\cup (3, 4)", "(1, 2)\\cup(3,4)"),
        ("-2, 1+\\sqrt5, 1-\\sqrt5", "\\{1\\pm\\sqrt{5},-2\\}"),
        ("k = 2n - 1", "k=2 n-1"),
    ],
)
def test_equivalent_spellings_match(prediction, gold):
    assert answers_match(prediction, gold, "math")


def test_integer_answers_ignore_leading_zeros():
    assert grade("\\boxed{24}", "024", "integer").correct
    assert grade("The answer is 073.", "73", "integer").correct


def test_grade_returns_extracted_answer():
    assert grade("so \\boxed{7}", "7", "math") == Grade(correct=True, extracted="7")
    assert grade("nothing to see", "7", "math") == Grade(correct=False, extracted=None)


def test_unknown_answer_type_is_a_data_error():
    for call in (lambda: grade("1", "1", "numeric"), lambda: extract_answer("1", "numeric")):
        with pytest.raises(DataError, match="unknown answer_type 'numeric'"):
            call()
    with pytest.raises(DataError, match="'bool'"):
        answers_match("1", "1", "bool")


PAIRS = [("0.5", "\\frac{1}{2}", True), ("2\\sqrt{2}", "\\sqrt{8}", True), ("x^2+2x+1", "(x+1)^2", True)]
PAIRS += [("\\sqrt{3}", "\\sqrt{2}", False), ("(x+1)^2", "x^2+1", False)]


def test_symbolic_grading_is_the_same_from_worker_threads():
    assert symbolic_equal("x + 1", "1 + x")  # warm math-verify's LaTeX parser up outside the timed helpers
    grading._parse.cache_clear()  # make workers do the parsing, not read the main thread's cache
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: answers_match(p[0], p[1], "math"), PAIRS))
    assert results == [expected for _, _, expected in PAIRS]


def test_a_hanging_comparison_in_a_worker_thread_gives_up(monkeypatch):
    import math_verify

    release = threading.Event()

    def stuck(*args, **kwargs):
        release.wait(30)
        return True

    monkeypatch.setattr(math_verify, "verify", stuck)
    monkeypatch.setattr(grading, "MATH_VERIFY_TIMEOUT_S", 1)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(symbolic_equal, "x^2", "x \\cdot x").result(timeout=20)
    release.set()
    assert result is False
    assert time.perf_counter() - start < 5
