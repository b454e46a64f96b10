"""``darm grade`` with ``"truncated": true`` lines, and on adversarial predictions (issue 11 item 12)."""

from __future__ import annotations

import json
import time


def test_truncated_lines_get_no_last_number_fallback(darm, tmp_path):
    lines = [
        {"prediction": "= 18\n\n11. Now we", "gold": "11", "truncated": True},
        {"prediction": "= 18\n\n11. Now we", "gold": "11"},
        {"prediction": "So \\boxed{11} is it", "gold": "11", "truncated": True},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, _ = darm("grade", path)
    assert code == 0
    assert [json.loads(line)["correct"] for line in out.splitlines()] == [False, True, True]


def test_a_non_boolean_truncated_field_is_a_one_line_error(darm, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prediction": "1", "gold": "1", "truncated": "yes"}) + "\n")
    code, out, err = darm("grade", path)
    assert code == 2 and out == ""
    assert "p.jsonl:1" in err and "truncated" in err


def test_twenty_thousand_nested_boxes_grade_quickly(darm, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prediction": "\\boxed{" * 20_000, "gold": "1"}) + "\n")
    started = time.perf_counter()
    code, out, _ = darm("grade", path)
    assert code == 0 and time.perf_counter() - started < 20
    assert json.loads(out)["correct"] is False
