"""Final-answer extraction and grading for math (symbolic equivalence) and multiple-choice (letter) answers.

Extraction reads the forms models actually write (``\\boxed{}``, "The answer is …", "Answer: …", ``#### n``, a
bare answer, and as a last resort the last number). A *truncated* output (the token budget ran out before an end
token) gets no unanchored guess: only a complete ``\\boxed{}`` or an answer phrase / ``####`` line that ends before
the text does, so a cut-off step label ("…= 18\n\n11. Now we") cannot win. An empty ``\\boxed{}`` is no answer.

Matching first tries cheap exact checks (normalised strings, numbers), then math-verify for symbolic equivalence.
math-verify's own timeouts use ``SIGALRM``, which only works in the main thread: elsewhere we switch them off and
bound the call with a helper thread instead, so grading from worker threads is safe and never hangs.

Bounded time on adversarial text: extraction is linear in the text's length (brace groups are matched in one pass,
sentences are scanned at most :data:`MAX_SENTENCE_CHARS` ahead); an extracted answer longer than
:data:`MAX_ANSWER_CHARS` is not compared; and each item has :data:`ITEM_TIME_LIMIT_S` for its math-verify calls,
after which it is marked ungradable (counted wrong) instead of holding up the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
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
# Seconds one item may spend in math-verify in all; past it the item is ungradable (and counted wrong).
ITEM_TIME_LIMIT_S = 10
# No real final answer is longer; a longer one is not compared (the item is ungradable).
MAX_ANSWER_CHARS = 2000
# How far an answer phrase ("The answer is …") is read looking for the end of its sentence.
MAX_SENTENCE_CHARS = 1000

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
    """Whether a prediction is right, and the answer that was read from it (None when nothing was found).
    ``ungradable``: the comparison hit the per-item time limit or the answer was absurdly long (counted wrong)."""

    correct: bool
    extracted: str | None
    ungradable: bool = False


def check_answer_type(answer_type: str) -> str:
    if answer_type not in ANSWER_TYPES:
        raise DataError(f"unknown answer_type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")
    return answer_type


class _OutOfTime(Exception):
    """The item's time limit for math-verify has passed."""


_deadline = threading.local()


def grade(prediction_text: str, gold: str, answer_type: str, *, truncated: bool = False) -> Grade:
    """Extract the final answer from a model's output and compare it with the gold answer. ``truncated``: the
    output hit its token budget (no last-number or bare-reply fallback, see the module docstring)."""
    check_answer_type(answer_type)
    extracted = extract_answer(prediction_text, answer_type, truncated=truncated)
    if extracted is None:
        return Grade(correct=False, extracted=None)
    if len(extracted) > MAX_ANSWER_CHARS:
        return Grade(correct=False, extracted=extracted[:100] + "…", ungradable=True)
    _deadline.at = time.monotonic() + ITEM_TIME_LIMIT_S
    try:
        correct = answers_match(extracted, gold, answer_type)
    except _OutOfTime:
        return Grade(correct=False, extracted=extracted, ungradable=True)
    finally:
        _deadline.at = None
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


def _strip_stars(value: str) -> str:
    """Leading and trailing whitespace and markdown stars (a loop, not a regex: ``[\\s*]+$`` is quadratic on a
    long run of spaces inside the text)."""
    previous = None
    while previous != value:
        previous, value = value, value.strip().strip("*")
    return value


def extract_answer(text: str, answer_type: str, *, truncated: bool = False) -> str | None:
    """The final answer a model wrote, or None. ``mc`` returns a letter A–J; math types return a string.
    ``truncated``: the text was cut by the token budget, so only complete, anchored answers count."""
    check_answer_type(answer_type)
    if not isinstance(text, str) or not text.strip():
        return None
    if answer_type == "mc":
        return _extract_letter(text)
    return _extract_math(text, truncated)


# "-$60,000" and "−5": the sign belongs to the number, not to the currency sign or a unicode minus.
_SIGNED_CURRENCY_RE = re.compile(r"-\s?\\?\$\s?(?=[\d.])")


def _extract_math(text: str, truncated: bool = False) -> str | None:
    """Latest anchored answer wins (so a boxed example in an echoed question does not beat the final statement).
    The latest complete box counts even when empty: an empty ``\\boxed{}`` is an anchor with no answer."""
    text = _SIGNED_CURRENCY_RE.sub("-", text.replace("−", "-"))
    candidates: list[tuple[int, str | None]] = []
    box = _latest_box(text)
    if box is not None:
        candidates.append(box)
    boxed = box is not None and box[1] is not None
    end_of_text = len(text.rstrip())
    for match in reversed(list(_HASHES_RE.finditer(text))):
        value = _tidy(match.group(1))
        if value and not (truncated and match.end() >= end_of_text):
            candidates.append((match.start(), value))
            break
    for pos, value in _phrase_answers(text, complete_only=truncated):
        # "Final answer is above." must not override a boxed answer; a phrase with math in it may.
        if not boxed or re.search(r"[\d\\]", value):
            candidates.append((pos, value))
            break
    if candidates:
        return max(candidates, key=lambda item: item[0])[1]
    return None if truncated else _bare_answer(text)


def _box_spans(text: str) -> list[tuple[int, int, int]]:
    """(where the box command starts, where its argument starts, where it ends) for every complete box, in
    order. Positions, not strings: copying 20,000 nested arguments would be quadratic."""
    spans = []
    closing = _matching_braces(text)
    for match in _BOX_RE.finditer(text):
        span = _box_argument(text, match.end(), closing)
        if span is not None:
            spans.append((match.start(), *span))
    return spans


def _latest_box(text: str) -> tuple[int, str | None] | None:
    """(position, content) of the last complete box, content None when it is empty; None without a box."""
    spans = _box_spans(text)
    if not spans:
        return None
    start, first, last = spans[-1]
    return start, text[first:last].strip() or None


_TOKEN_RE = re.compile(r"[^\s${}]{1,200}")  # bounded: an unbroken run after each of 20,000 boxes is quadratic


def _box_argument(text: str, i: int, closing: dict[int, int]) -> tuple[int, int] | None:
    """Span of the argument of ``\\boxed``: a balanced ``{…}`` group, or a single token (``\\boxed 5``); None
    when the group never closes (a truncated generation)."""
    while i < len(text) and text[i] in " \t":
        i += 1
    if text.startswith("[", i):  # \framebox[width]{...}
        close = text.find("]", i, i + 100)
        i = close + 1 if close >= 0 else i
    if i < len(text) and text[i] == "{":
        end = closing.get(i)
        return None if end is None else (i + 1, end)
    token = _TOKEN_RE.match(text, i)
    return token.span() if token else None


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each unescaped ``{`` → position of its closing ``}``, in one pass (linear time: 20,000 nested
    ``\\boxed{`` must not take minutes). Braces after a backslash (``\\{``) are literal."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for k, char in enumerate(text):
        if char not in "{}" or (k > 0 and text[k - 1] == "\\"):
            continue
        if char == "{":
            stack.append(k)
        elif stack:
            closing[stack.pop()] = k
    return closing


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{}`` / ``\\fbox{}`` / ``\\framebox{}`` (how reference solutions mark the gold)."""
    for _, first, last in reversed(_box_spans(text)):
        content = text[first:last].strip()
        if content:
            return content
    return None


# Only the last few answer phrases can win; reading every one of thousands would be quadratic.
MAX_PHRASES = 20


def _phrase_answers(text: str, complete_only: bool = False) -> list[tuple[int, str]]:
    """Answers after "The answer is" / "Answer:", latest first; ``complete_only`` drops one whose sentence runs to
    the end of the text (in a truncated output it may be cut: "The answer is 1" of "…is 18")."""
    found = []
    end_of_text = len(text.rstrip())
    for match in list(_PHRASE_RE.finditer(text))[-MAX_PHRASES:][::-1]:
        piece, stop = _sentence_span(text, match.end())
        if complete_only and stop >= end_of_text:
            continue
        value = _tidy(piece)
        if value:
            found.append((match.start(), value))
    return found


def _sentence_span(text: str, start: int) -> tuple[str, int]:
    """(text from ``start`` to the end of its sentence, where the scan stopped), not cutting inside ``$…$`` or
    brackets; at most :data:`MAX_SENTENCE_CHARS` ahead."""
    depth, in_math, k = 0, False, start
    limit = min(len(text), start + MAX_SENTENCE_CHARS)
    while k < limit:
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
    return (piece[: stop.start()] if stop else piece), k


def _tidy(value: str) -> str:
    """Strip markdown stars, trailing punctuation and a single pair of enclosing ``$``."""
    value = _strip_stars(value).rstrip(".,;:").strip()
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
    """A short reply is itself the answer ("3/4", "$18 dollars", "x = 2"); otherwise take the last number. A
    reply of two words around a number ("He lost -$60,000 overall") is a sentence: its number is the answer."""
    stripped = _tidy(text.strip())
    words = len(_WORD_RE.findall(stripped))
    short = "\n" not in stripped and len(stripped) <= 300 and words <= 2
    mathy = words <= 1 or re.search(r"[\d\\^_=+*/()\[\]{}-]", stripped)
    numbers = _NUMBER_RE.findall(text.replace("−", "-"))
    prose = words == 2 and len(numbers) == 1 and not re.search(r"[\\^_=]", stripped)
    if stripped and short and mathy and not prose and not _SENTENCE_RE.search(stripped):
        return stripped
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
_MC_BOXED_AT = re.compile(_MC_BOXED_RE.pattern.removeprefix("^"))  # matched at a position, inside a box
_MC_LEADING_RE = re.compile(r"^\s*\**[\(\[]?([A-J])(?:[\)\]]|[.:](?:\s|$)|\**\s*$)")
_MC_ALONE_RE = re.compile(r"^\s*[\(\[]?([a-jA-J])[\)\]]?\s*\.?\s*$")
_MC_IS_CORRECT_RE = re.compile(r"^\s*\(?([A-J])\)?\s+is\s+(?:the\s+)?(?i:correct|right|best|answer)")


def _extract_letter(text: str) -> str | None:
    """The chosen option letter. Only anchored forms count, so a sentence starting "A ball…" is no answer."""
    candidates = [(m.start(), m.group("letter")) for m in _MC_PHRASE_RE.finditer(text)]
    for pos, first, last in reversed(_box_spans(text)):
        while first < last and text[first].isspace():
            first += 1
        letter = _MC_BOXED_AT.match(text, first, last)
        if letter:
            candidates.append((pos, letter.group(1).upper()))
            break
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
    limit = MATH_VERIFY_TIMEOUT_S
    deadline = getattr(_deadline, "at", None)
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfTime
        limit = max(1, min(limit, math.ceil(remaining)))
    if threading.current_thread() is threading.main_thread():
        try:
            return call(limit)
        except Exception:
            return default
    box: list[T] = []

    def work() -> None:
        with contextlib.suppress(Exception):
            box.append(call(None))

    helper = threading.Thread(target=work, name="math-verify", daemon=True)
    helper.start()
    helper.join(limit)
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
