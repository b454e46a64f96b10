"""Multiple-choice extraction must not read the pronoun "I" as option I (issue 11, item 5)."""

from __future__ import annotations

import pytest

from latent_darm.grading import extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer I got is C", "C"),
        ("The answer I got is C.", "C"),
        ("The answer to this question is B", "B"),
        ("answer I think", None),
        ("Answer: I think so", None),
        ("The answer is I.", "I"),
        ("Answer: I", "I"),
        ("The correct option is I because the others fail.", "I"),
    ],
)
def test_the_pronoun_i_is_not_option_i(text, expected):
    assert extract_answer(text, "mc") == expected
