"""Final-answer extraction and grading for math (symbolic equivalence) and multiple-choice (letter) answers.

Extraction reads the forms models actually write (``\\boxed{}``, "The answer is …", "Answer: …", ``#### n``, a
bare answer, and as a last resort the last number). Matching first tries cheap exact checks (normalised strings,
numbers), then math-verify for symbolic equivalence. math-verify's own timeouts use ``SIGALRM``, which only works
in the main thread: elsewhere we switch them off and bound the call with a helper thread instead, so grading from
worker threads is safe and never hangs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar

from latent_darm.errors import DataError

ANSWER_TYPES = ("math", "integer", "mc")
MC_LETTERS = "ABCDEFGHIJ"
# Seconds allowed for one math-verify parse or comparison (an int: math-verify hands it to signal.alarm).
MATH_VERIFY_TIMEOUT_S = 3

T = TypeVar("T")


def format_choices(question: str, choices: list[str]) -> str:
    """The MC prompt body: the question, then one "A. option" line per choice (the letters the grader reads back);
    used by benchmarks and training data alike."""
    if not 2 <= len(choices) <= len(MC_LETTERS):
        raise ValueError(f"expected 2..{len(MC_LETTERS)} choices, got {len(choices)}")
    lines = [f"{MC_LETTERS[i]}. {str(choice).strip()}" for i, choice in enumerate(choices)]
    return question.strip() + "\n" + "\n".join(lines)


@dataclass(frozen=True)
class Grade:
    """Whether a prediction is right, and the answer that was read from it (None when nothing was found)."""

    correct: bool
    extracted: str | None


def check_answer_type(answer_type: str) -> str:
    if answer_type not in ANSWER_TYPES:
        raise DataError(f"unknown answer_type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")
    return answer_type


def grade(prediction_text: str, gold: str, answer_type: str) -> Grade:
    """Extract the final answer from a model's output and compare it with the gold answer."""
    check_answer_type(answer_type)
    extracted = extract_answer(prediction_text, answer_type)
    correct = extracted is not None and answers_match(extracted, gold, answer_type)
    return Grade(correct=correct, extracted=extracted)


# ----------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_PHRASE_RE = re.compile(r"(?i:\b(?:final\s+)?answer)\**\s*(?:(?i:is)\s*[:=]?|[:=])\**\s*")
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_SENTENCE_RE = re.compile(r"(?i)(?<!\\)\b(?:is|are|was|were|the|so|thus|therefore|we|get|gives?)\b")
_STOP_WORDS_RE = re.compile(r"\s+(?:since|because|which|where|as|so|for|but|thus|hence)\b")
_MATH_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_LEADING_STARS = re.compile(r"^[\s*]+|[\s*]+$")


def extract_answer(text: str, answer_type: str) -> str | None:
    """The final answer a model wrote, or None. ``mc`` returns a letter A–J; math types return a string."""
    check_answer_type(answer_type)
    if not isinstance(text, str) or not text.strip():
        return None
    if answer_type == "mc":
        return _extract_letter(text)
    return _extract_math(text)


def _extract_math(text: str) -> str | None:
    """Latest anchored answer wins (so a boxed example in an echoed question does not beat the final statement)."""
    boxed = _boxed_answers(text)
    phrases = _phrase_answers(text)
    hashes = [(m.start(), _tidy(m.group(1))) for m in _HASHES_RE.finditer(text) if _tidy(m.group(1))]
    candidates = boxed + hashes
    for pos, value in phrases:
        # "Final answer is above." must not override a boxed answer; a phrase with math in it may.
        if not boxed or re.search(r"[\d\\]", value):
            candidates.append((pos, value))
    if candidates:
        return max(candidates, key=lambda item: item[0])[1]
    return _bare_answer(text)


def _boxed_answers(text: str) -> list[tuple[int, str]]:
    found = []
    for match in _BOX_RE.finditer(text):
        content = _box_argument(text, match.end())
        if content is not None and content.strip():
            found.append((match.start(), content.strip()))
    return found


def _box_argument(text: str, i: int) -> str | None:
    """The argument of ``\\boxed``: a balanced ``{…}`` group, or a single token (``\\boxed 5``)."""
    while i < len(text) and text[i] in " \t":
        i += 1
    if text.startswith("[", i):  # \framebox[width]{...}
        close = text.find("]", i)
        i = close + 1 if close >= 0 else i
    if i < len(text) and text[i] == "{":
        return _balanced(text, i)
    token = re.match(r"[^\s${}]+", text[i:])
    return token.group(0) if token else None


def _balanced(text: str, start: int) -> str | None:
    """Contents of the brace group opening at ``start``; None if it never closes (a truncated generation)."""
    depth = 0
    for k in range(start, len(text)):
        char = text[k]
        if char == "\\" and k + 1 < len(text) and text[k + 1] in "{}":
            continue
        if char == "{" and (k == 0 or text[k - 1] != "\\"):
            depth += 1
        elif char == "}" and (k == 0 or text[k - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : k]
    return None


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{}`` / ``\\fbox{}`` / ``\\framebox{}`` (how reference solutions mark the gold)."""
    found = _boxed_answers(text)
    return found[-1][1] if found else None


def _phrase_answers(text: str) -> list[tuple[int, str]]:
    found = []
    for match in _PHRASE_RE.finditer(text):
        value = _tidy(_sentence(text, match.end()))
        if value:
            found.append((match.start(), value))
    return found


def _sentence(text: str, start: int) -> str:
    """Text from ``start`` to the end of its sentence, not cutting inside ``$…$`` or brackets."""
    depth, in_math, k = 0, False, start
    while k < len(text):
        char = text[k]
        nxt = text[k + 1] if k + 1 < len(text) else ""
        if char == "\\" and nxt:
            k += 2
            continue
        if char == "$":
            in_math = not in_math
        elif char in "{([":
            depth += 1
        elif char in "})]":
            depth = max(0, depth - 1)
        elif depth == 0 and not in_math:
            if char == "\n" or (char == "." and (not nxt or nxt.isspace())):
                break
            if char == "," and re.match(r",\s+[a-z]{2,}", text[k : k + 12]):
                break
        k += 1
    piece = text[start:k]
    stop = _STOP_WORDS_RE.search(piece)
    return piece[: stop.start()] if stop else piece


def _tidy(value: str) -> str:
    """Strip markdown stars, trailing punctuation and a single pair of enclosing ``$``."""
    value = _LEADING_STARS.sub("", value).strip().rstrip(".,;:").strip()
    if value.startswith("$$") and value.endswith("$$") and len(value) > 4:
        value = value[2:-2]
    elif value.startswith("$") and value.endswith("$") and len(value) > 1:
        value = value[1:-1]
    elif value.startswith("\\(") and value.endswith("\\)"):
        value = value[2:-2]
    if len(_MATH_DOLLAR_RE.findall(value)) == 1:  # a sentence cut inside "$…$"
        value = _MATH_DOLLAR_RE.sub("", value)
    return value.strip()


def _bare_answer(text: str) -> str | None:
    """A short reply is itself the answer ("3/4", "$18 dollars", "x = 2"); otherwise take the last number."""
    stripped = _tidy(text.strip())
    words = len(_WORD_RE.findall(stripped))
    short = "\n" not in stripped and len(stripped) <= 300 and words <= 2
    mathy = words <= 1 or re.search(r"[\d\\^_=+*/()\[\]{}-]", stripped)
    if stripped and short and mathy and not _SENTENCE_RE.search(stripped):
        return stripped
    numbers = _NUMBER_RE.findall(text.replace("−", "-"))
    return numbers[-1] if numbers else None


# "The answer [I got] is C": up to three words may stand between "answer" and "is"; without "is", an "I" followed
# by a lower-case word ("Answer: I think...") is the pronoun, not option I.
_MC_PHRASE_RE = re.compile(
    r"(?i:\b(?:final\s+|correct\s+)?(?:answer|option|choice))\**\s*"
    r"(?:(?:[^\W\d_]+\s+){0,3}?(?P<is>(?i:is))\s*[:=]?|[:=])?\**\s*"
    r"(?i:option\s*|choice\s*)?[\(\[]?\$?(?:\\(?:boxed|text|textbf|mathrm)\s*\{)*\s*\(?(?P<letter>[A-J])(?![A-Za-z0-9'])"
    r"(?(is)|(?!(?<=I)\s+[a-z]))(?![\)\]]?\s+(?:is|are)\s+(?:wrong|incorrect|false|not)\b)"
)
_MC_BOXED_RE = re.compile(r"^(?:\\(?:text|textbf|mathrm)\s*\{)?\s*\(?([A-Ja-j])\)?(?:[.:)}\s]|$)")
_MC_LEADING_RE = re.compile(r"^\s*\**[\(\[]?([A-J])(?:[\)\]]|[.:](?:\s|$)|\**\s*$)")
_MC_ALONE_RE = re.compile(r"^\s*[\(\[]?([a-jA-J])[\)\]]?\s*\.?\s*$")
_MC_IS_CORRECT_RE = re.compile(r"^\s*\(?([A-J])\)?\s+is\s+(?:the\s+)?(?i:correct|right|best|answer)")


def _extract_letter(text: str) -> str | None:
    """The chosen option letter. Only anchored forms count, so a sentence starting "A ball…" is no answer."""
    candidates = [(m.start(), m.group("letter")) for m in _MC_PHRASE_RE.finditer(text)]
    for pos, content in _boxed_answers(text):
        letter = _MC_BOXED_RE.match(content)
        if letter:
            candidates.append((pos, letter.group(1).upper()))
    if candidates:
        return max(candidates, key=lambda item: item[0])[1]
    for pattern in (_MC_ALONE_RE, _MC_LEADING_RE, _MC_IS_CORRECT_RE):
        match = pattern.match(text)
        if match:
            return match.group(1).upper()
    return None


# ----------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------


def answers_match(prediction: str, gold: str, answer_type: str) -> bool:
    """Whether an *extracted* answer equals the gold one: letters for ``mc``, mathematical equivalence otherwise.

    For a model's whole output use :func:`grade`, which extracts first.
    """
    check_answer_type(answer_type)
    if prediction is None or gold is None:
        return False
    prediction, gold = str(prediction), str(gold)
    if answer_type == "mc":
        return _letter_of(prediction) is not None and _letter_of(prediction) == _letter_of(gold)
    return _math_equal(prediction, gold)


def _letter_of(value: str) -> str | None:
    stripped = value.strip().strip("().").strip()
    if len(stripped) == 1 and stripped.upper() in MC_LETTERS:
        return stripped.upper()
    return _extract_letter(value)


def _math_equal(prediction: str, gold: str) -> bool:
    pred, ref = normalize_math(prediction), normalize_math(gold)
    if not pred or not ref:
        return False
    if _squash(pred) == _squash(ref):
        return True
    if "=" not in ref:
        pred = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*", "", pred)  # "x = 5" against a gold of 5
    ref_number = to_number(ref)
    if ref_number is not None:
        pred_number = to_number(pred)
        if pred_number is None:
            pred_number = to_number(_leading_number(pred))
        if pred_number is not None:
            return _numbers_close(pred_number, ref_number)
    return symbolic_equal(ref, pred) or symbolic_equal(_tidy(gold), _tidy(prediction))


# A trailing unit such as "\\text{ cm}", "\\mathrm{~m}^2" or "\\text{dollars}" (not "\\mathrm{e}": one letter
# without a leading space is a constant or variable).
_UNIT_TEXT_RE = re.compile(
    r"\\(?:text|textrm|textbf|mathrm|mbox)\s*\{([\s~]+[A-Za-z][A-Za-z\s.~/^\-]*|[A-Za-z]{2,}[A-Za-z\s.~/^\-]*)\}"
    r"(?:\^\{?\d\}?)?\s*$"
)
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textrm|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[!,;:> ]|\\q?quad(?![A-Za-z])|~")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z])")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def normalize_math(text: str) -> str:
    """Surface clean-up both sides get before comparing: dollars, spacing, units in ``\\text{}``, degrees, percent."""
    value = _tidy(str(text).strip().replace("−", "-").replace("\n", " "))
    value = value.replace("\\$", "").replace("$", "")
    value = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", value)
    value = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", value)
    value = _SPACING_RE.sub(" ", value)
    value = _DEGREE_RE.sub("", value).replace("\\%", "").replace("%", "")
    whole = _TEXT_WRAP_RE.fullmatch(value.strip())
    if whole:  # the whole answer is words, e.g. \text{east}
        value = whole.group(1)
    else:
        value = _UNIT_TEXT_RE.sub(lambda m: "" if _has_math(value, m) else m.group(0), value)
        value = _TEXT_WRAP_RE.sub(r"\1", value)
    value = re.sub(r"\s+(?:dollars?|cents?|degrees?|units?|percent)\.?$", "", value.strip(), flags=re.I)
    value = value.strip().rstrip(".").strip()
    if _THOUSANDS_RE.match(value):
        value = value.replace(",", "")
    return value


def _has_math(value: str, match: re.Match[str]) -> bool:
    """A ``\\text{…}`` next to other content is a unit to drop; alone it is the answer itself."""
    rest = (value[: match.start()] + value[match.end() :]).strip()
    return bool(rest)


def _squash(value: str) -> str:
    return re.sub(r"\s+", "", value)


_SCI_TIMES_RE = re.compile(r"^([+-]?\d+(?:\.\d+)?)\\(?:times|cdot)10\^\{?([+-]?\d+)\}?$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{?(-?\d+)\}?\{?(\d+)\}?$")
_PLAIN_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def to_number(text: str | None) -> Fraction | float | None:
    """A plain number in any common spelling (``25``, ``025``, ``-3.50``, ``4.5e33``, ``3/4``, ``\\frac{3}{4}``)."""
    if not text:
        return None
    value = _squash(text)
    if _THOUSANDS_RE.match(value):
        value = value.replace(",", "")
    try:
        if _PLAIN_NUMBER_RE.match(value):
            return Fraction(value) if "e" not in value.lower() else float(value)
        if re.fullmatch(r"[+-]?\d+/\d+", value):
            return Fraction(value)
        frac = _FRAC_RE.match(value)
        if frac:
            sign = -1 if frac.group(1) else 1
            return sign * Fraction(int(frac.group(2)), int(frac.group(3)))
        if re.fullmatch(r"-?\\frac\d\d", value):  # \frac12
            return (-1 if value.startswith("-") else 1) * Fraction(int(value[-2]), int(value[-1]))
        sci = _SCI_TIMES_RE.match(value)
        if sci:
            return float(sci.group(1)) * 10.0 ** int(sci.group(2))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _leading_number(text: str) -> str | None:
    """``12 apples`` → ``12``: a number followed only by plain words (units), used when the gold is a number."""
    match = re.fullmatch(
        r"\s*([+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/\d+)?)\s*[A-Za-z][A-Za-z\s.,/'^\-]*", text
    )
    return match.group(1) if match else None


def _numbers_close(a: Fraction | float, b: Fraction | float) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = float(a), float(b)
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


# ----------------------------------------------------------------------------------------------------------------
# math-verify, made thread-safe and bounded
# ----------------------------------------------------------------------------------------------------------------


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once when its timeouts are off; we do that on purpose in worker threads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


def _bounded(call: Callable[[int | None], T], default: T) -> T:
    """Run ``call(timeout)``: math-verify's SIGALRM timeout in the main thread; a joined helper thread elsewhere.

    A helper that overruns is abandoned (daemon) and ``default`` returned, so the caller never waits forever.
    """
    if threading.current_thread() is threading.main_thread():
        try:
            return call(MATH_VERIFY_TIMEOUT_S)
        except Exception:
            return default
    box: list[T] = []

    def work() -> None:
        with contextlib.suppress(Exception):
            box.append(call(None))

    helper = threading.Thread(target=work, name="math-verify", daemon=True)
    helper.start()
    helper.join(MATH_VERIFY_TIMEOUT_S)
    return box[0] if box else default


@lru_cache(maxsize=8192)
def _parse(text: str) -> tuple[Any, ...]:
    from math_verify import parse

    wrapped = text if text.startswith("$") else f"${text}$"  # math-verify wants LaTeX inside delimiters
    return tuple(_bounded(lambda limit: parse(wrapped, parsing_timeout=limit), []))


def symbolic_equal(gold: str, prediction: str) -> bool:
    """math-verify's equivalence of two LaTeX answers (gold first: its ``verify`` is not symmetric)."""
    from math_verify import verify

    if not gold or not prediction:
        return False
    gold_parsed, pred_parsed = _parse(gold), _parse(prediction)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(_bounded(lambda limit: verify(list(gold_parsed), list(pred_parsed), timeout_seconds=limit), False))
